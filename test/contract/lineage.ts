/**
 * The lineage's contract (lib/lineage/types.ts Lineage), as one suite both stores run: the table
 * store on Azurite and the memory store the simulations use. Round trips, newest first with a
 * limit, ETag-guarded updates that fail with ConflictError, adds that never overwrite, NotFound on
 * a deleted row, fan-out batches counted once with their sums.
 */
import { ConflictError, NotFoundError } from "../../lib/core/errors";
import { newId } from "../../lib/lineage/ids";
import type { DiskRecord, Lineage, RestorePointRecord, RunRecord } from "../../lib/lineage/types";

const T0 = Date.parse("2026-11-25T11:41:00.123Z");
const TIB = 1024 ** 4;

function disk(id: string, extra: Partial<DiskRecord> = {}): DiskRecord {
  return {
    id,
    sourceUrl: `https://acct.blob.core.windows.net/vhds/${id}.vhd`,
    backupAccountUrl: "https://bak.blob.core.windows.net",
    backupContainer: "diskdelta",
    backupBlob: id,
    createdAt: new Date(T0).toISOString(),
    ...extra,
  };
}

function run(diskId: string, at: number, extra: Partial<RunRecord> = {}): RunRecord {
  const t = new Date(T0 + at).toISOString();
  return {
    id: newId(new Date(T0 + at), "r"),
    diskId,
    trigger: "cli",
    kind: "full",
    state: "planned",
    startedAt: t,
    updatedAt: t,
    owner: "cli@h:1",
    leaseUntil: t,
    rangesWritten: 0,
    rangesCleared: 0,
    chunksTotal: 0,
    chunksDone: 0,
    bytesPlanned: 0,
    bytesCopied: 0,
    bytesCleared: 0,
    ...extra,
  };
}

function point(diskId: string, at: number, extra: Partial<RestorePointRecord> = {}): RestorePointRecord {
  return {
    id: newId(new Date(T0 + at), "p"),
    diskId,
    runId: newId(new Date(T0 + at), "r"),
    kind: "incremental",
    backupSnapshot: new Date(T0 + at).toISOString(),
    backupUrl: "https://bak.blob.core.windows.net/diskdelta/x",
    sourceSnapshot: new Date(T0 + at).toISOString(),
    size: 4 * TIB,
    createdAt: new Date(T0 + at).toISOString(),
    ...extra,
  };
}

function strip<T extends { etag?: string }>(r: T): Omit<T, "etag"> {
  const { etag: _etag, ...rest } = r;
  return rest;
}

export function lineageContract(name: string, open: () => Promise<Lineage>): void {
  describe(`lineage contract: ${name}`, () => {
    let lineage: Lineage;
    let n = 0;
    const id = () => `dsk${Date.now().toString(36)}${++n}`;

    beforeAll(async () => {
      lineage = await open();
      await lineage.ensureTables();
    });

    test("a disk, a run and a point round-trip exactly, optional fields and large numbers included", async () => {
      const d = disk(id(), {
        baseSnapshot: "2026-11-25T11:41:00.1230000Z",
        baseSize: 4 * TIB,
        baseFence: 1764000000000,
        retainLast: 3,
        intervalMinutes: 90,
      });
      const added = await lineage.addDisk(d);
      expect(added.etag).toBeTruthy();
      expect(strip((await lineage.getDisk(d.id))!)).toEqual(d);
      const r = run(d.id, 0, {
        bytesCopied: 3 * TIB + 512,
        sourceSize: 4 * TIB,
        checkpoint: 2 * TIB,
        fence: 1764000000001,
        state: "unchanged",
      });
      await lineage.addRun(r);
      expect(strip((await lineage.getRun(d.id, r.id))!)).toEqual(r);
      const p = point(d.id, 0, { integrity: "failed", capturedAt: new Date(T0).toISOString() });
      await lineage.addPoint(p);
      expect(strip((await lineage.getPoint(d.id, p.id))!)).toEqual(p);
    });

    test("unknown rows read as undefined; runs and points of another disk are not seen", async () => {
      const d = id();
      expect(await lineage.getDisk(d)).toBeUndefined();
      expect(await lineage.getRun(d, newId(new Date(T0), "r"))).toBeUndefined();
      expect(await lineage.getPoint(d, newId(new Date(T0), "p"))).toBeUndefined();
      expect(await lineage.listRuns(d)).toEqual([]);
      expect(await lineage.listPoints(d)).toEqual([]);
    });

    test("runs and points list newest first, and a limit stops there", async () => {
      const d = id();
      await lineage.addDisk(disk(d));
      const runs = [5, 1, 3, 2, 4].map((i) => run(d, i * 1000));
      for (const r of runs) await lineage.addRun(r);
      const order = [...runs]
        .sort((a, b) => Date.parse(b.startedAt) - Date.parse(a.startedAt))
        .map((r) => r.id);
      expect((await lineage.listRuns(d)).map((r) => r.id)).toEqual(order);
      expect((await lineage.listRuns(d, 2)).map((r) => r.id)).toEqual(order.slice(0, 2));
      const points = [2, 9, 4].map((i) => point(d, i * 1000));
      for (const p of points) await lineage.addPoint(p);
      expect((await lineage.listPoints(d, 1)).map((p) => p.id)).toEqual([points[1].id]);
      expect(await lineage.listRuns(d, 0)).toEqual([]);
    });

    test("of two writers who read the same row, the first update wins and the second gets ConflictError", async () => {
      const d = id();
      await lineage.addDisk(disk(d));
      const a = (await lineage.getDisk(d))!;
      const b = (await lineage.getDisk(d))!;
      const written = await lineage.updateDisk({ ...a, activeRunId: "r-1" });
      expect(written.etag).not.toBe(a.etag);
      await expect(lineage.updateDisk({ ...b, activeRunId: "r-2" })).rejects.toThrow(ConflictError);
      expect((await lineage.getDisk(d))!.activeRunId).toBe("r-1");
      // The same guard on runs and points.
      const r = run(d, 0);
      const r1 = await lineage.addRun(r);
      await lineage.updateRun({ ...r1, state: "copying" });
      await expect(lineage.updateRun({ ...r1, state: "failed" })).rejects.toThrow(ConflictError);
      const p1 = await lineage.addPoint(point(d, 0));
      await lineage.updatePoint({ ...p1, readingUntil: new Date(T0).toISOString() });
      await expect(lineage.updatePoint({ ...p1, deletingSince: new Date(T0).toISOString() })).rejects.toThrow(
        ConflictError,
      );
    });

    test("an optional field set to undefined is removed by an update", async () => {
      const d = id();
      const added = await lineage.addDisk(disk(d, { activeRunId: "r-x", intervalMinutes: 5 }));
      await lineage.updateDisk({ ...added, activeRunId: undefined, intervalMinutes: undefined });
      const row = (await lineage.getDisk(d))!;
      expect(row.activeRunId).toBeUndefined();
      expect(row.intervalMinutes).toBeUndefined();
    });

    test("an update without an etag is refused; an update of a deleted point is NotFoundError", async () => {
      const d = id();
      await lineage.addDisk(disk(d));
      await expect(lineage.updateDisk(disk(d))).rejects.toThrow(/no etag/);
      const p = await lineage.addPoint(point(d, 0));
      await lineage.deletePoint(d, p.id);
      await lineage.deletePoint(d, p.id); // already gone: not an error
      await expect(lineage.updatePoint(p)).rejects.toThrow(NotFoundError);
    });

    test("adding what exists is a ConflictError and changes nothing", async () => {
      const d = id();
      await lineage.addDisk(disk(d, { backupBlob: "first" }));
      await expect(lineage.addDisk(disk(d, { backupBlob: "second" }))).rejects.toThrow(ConflictError);
      expect((await lineage.getDisk(d))!.backupBlob).toBe("first");
      const r = run(d, 0);
      await lineage.addRun(r);
      await expect(lineage.addRun({ ...r, state: "failed" })).rejects.toThrow(ConflictError);
      expect((await lineage.getRun(d, r.id))!.state).toBe("planned");
    });

    test("a batch counts once however often it is recorded; the sums say what was counted", async () => {
      const d = id();
      const r = run(d, 0);
      expect(await lineage.batchProgress(d, r.id)).toEqual({ batches: 0, bytesCopied: 0, chunksDone: 0 });
      expect(
        await lineage.countBatch(
          d,
          r.id,
          { generation: 1, batch: 0 },
          { bytesCopied: 3 * TIB, chunksDone: 2 },
        ),
      ).toBe(true);
      expect(
        await lineage.countBatch(
          d,
          r.id,
          { generation: 1, batch: 0 },
          { bytesCopied: 3 * TIB, chunksDone: 2 },
        ),
      ).toBe(false);
      // The same batch number of another planner generation is another batch.
      expect(
        await lineage.countBatch(d, r.id, { generation: 2, batch: 0 }, { bytesCopied: 512, chunksDone: 1 }),
      ).toBe(true);
      const results = await Promise.all(
        [1, 2, 3, 4].map((b) =>
          lineage.countBatch(d, r.id, { generation: 2, batch: b }, { bytesCopied: 1024, chunksDone: 1 }),
        ),
      );
      expect(results).toEqual([true, true, true, true]);
      expect(await lineage.batchProgress(d, r.id)).toEqual({
        batches: 6,
        bytesCopied: 3 * TIB + 512 + 4 * 1024,
        chunksDone: 7,
      });
    });
  });
}
