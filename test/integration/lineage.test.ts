/**
 * The lineage ids (pure) and the table store against the shared Azurite: exact round trips,
 * numbers beyond Int32 sent as Edm.Double, newest-first listing that stops at its limit, ETag
 * guarded updates, and the add/get/delete edge cases the engine relies on.
 */
import { TableClient, type TableServiceClientOptions } from "@azure/data-tables";
import {
  ConflictError,
  NotFoundError,
  TableLineage,
  newId,
  newestFirstKey,
  timeOfId,
  type DiskRecord,
  type RestorePointRecord,
  type RunRecord,
} from "../../lib/lineage";
import { testStorage, uniqueName } from "../support/testEnv";

const TIB = 1024 ** 4;
const T0 = Date.parse("2026-11-25T11:41:00.123Z");

describe("lineage ids", () => {
  test("an id names its UTC time to the millisecond and gives it back", () => {
    const now = new Date(T0);
    const id = newId(now, "r");
    expect(id).toMatch(/^r-20261125T114100123Z-[0-9a-f]{6}$/);
    expect(timeOfId(id).toISOString()).toBe(now.toISOString());
    expect(newId(now, "r")).not.toBe(id);
  });

  test("ids sort chronologically; newest-first keys sort the other way and end with the id", () => {
    const times = [0, 1, 999, 1000, 60_000, 86_400_000, 400 * 86_400_000].map((d) => new Date(T0 + d));
    const ids = times.map((t) => newId(t, "p"));
    expect([...ids].reverse().sort()).toEqual(ids);
    const keys = ids.map(newestFirstKey);
    expect([...keys].sort()).toEqual([...keys].reverse());
    for (const [i, key] of keys.entries()) expect(key.endsWith(`_${ids[i]}`)).toBe(true);
  });

  test("newestFirstKey counts milliseconds down from 9999999999999, 13 digits wide", () => {
    const id = newId(new Date(T0), "r");
    expect(newestFirstKey(id)).toBe(`${9_999_999_999_999 - T0}_${id}`);
    const epoch = newId(new Date(0), "r");
    expect(newestFirstKey(epoch)).toBe(`9999999999999_${epoch}`);
    const early = newId(new Date(5), "r");
    expect(newestFirstKey(early).split("_")[0]).toHaveLength(13);
  });

  test("malformed ids and unusable times are refused with the offending value named", () => {
    expect(() => timeOfId("r-2026-11-25-abc")).toThrow(/r-2026-11-25-abc/);
    expect(() => timeOfId("r-20261325T114100123Z-3fa9c1")).toThrow(/not a valid UTC time/);
    expect(() => newestFirstKey("r-20261125T114100123Z-XYZ")).toThrow(/not a diskdelta id/);
    expect(() => newId(new Date(NaN), "r")).toThrow(/invalid date/);
    expect(() => newId(new Date(T0), "r-x")).toThrow(/prefix/);
    expect(() => newestFirstKey(newId(new Date("1969-12-31T23:59:59.999Z"), "r"))).toThrow(/1970-2286/);
    expect(() => newestFirstKey(newId(new Date("2300-01-01T00:00:00.000Z"), "r"))).toThrow(/1970-2286/);
  });
});

interface Sent {
  method: string;
  url: string;
  body?: string;
}

describe("TableLineage on Azurite", () => {
  const sent: Sent[] = [];
  const names = { disks: uniqueName("disks"), runs: uniqueName("runs"), points: uniqueName("points") };
  let lineage: TableLineage;

  function tableFor(tableName: string): TableClient {
    const options: TableServiceClientOptions & { allowInsecureConnection: boolean } = {
      allowInsecureConnection: true,
      additionalPolicies: [
        {
          position: "perCall",
          policy: {
            name: "recordSentRequests",
            sendRequest: async (request, next) => {
              const body = typeof request.body === "string" ? request.body : undefined;
              sent.push({ method: request.method, url: request.url, body });
              return next(request);
            },
          },
        },
      ],
    };
    return TableClient.fromConnectionString(testStorage().webJobsStorage, tableName, options);
  }

  function disk(overrides: Partial<DiskRecord> = {}): DiskRecord {
    return {
      id: uniqueName("disk"),
      sourceUrl: "http://127.0.0.1:10000/srcacct/disks/os.vhd",
      backupAccountUrl: "http://127.0.0.1:10000/bakacct",
      backupContainer: "backups",
      backupBlob: "os.vhd",
      createdAt: "2026-11-25T11:41:00.123Z",
      ...overrides,
    };
  }

  function run(diskId: string, at: number, overrides: Partial<RunRecord> = {}): RunRecord {
    return {
      id: newId(new Date(at), "r"),
      diskId,
      trigger: "timer",
      kind: "incremental",
      state: "planned",
      startedAt: new Date(at).toISOString(),
      updatedAt: new Date(at).toISOString(),
      owner: "host-1:4242",
      leaseUntil: new Date(at + 300_000).toISOString(),
      rangesWritten: 0,
      rangesCleared: 0,
      chunksTotal: 0,
      chunksDone: 0,
      bytesPlanned: 0,
      bytesCopied: 0,
      bytesCleared: 0,
      ...overrides,
    };
  }

  function point(
    diskId: string,
    at: number,
    overrides: Partial<RestorePointRecord> = {},
  ): RestorePointRecord {
    return {
      id: newId(new Date(at), "p"),
      diskId,
      runId: newId(new Date(at), "r"),
      kind: "full",
      backupSnapshot: "2026-11-25T11:45:00.1234567Z",
      backupUrl: "http://127.0.0.1:10000/bakacct/backups/os.vhd",
      sourceSnapshot: "2026-11-25T11:41:00.7654321Z",
      size: 5 * TIB,
      createdAt: new Date(at).toISOString(),
      ...overrides,
    };
  }

  const withEtag = <R>(record: R) => ({ ...record, etag: expect.any(String) as unknown as string });

  beforeAll(async () => {
    lineage = new TableLineage(tableFor, names);
    await lineage.ensureTables();
  });

  test("ensureTables is idempotent, also from a second store on the same tables", async () => {
    await expect(lineage.ensureTables()).resolves.toBeUndefined();
    await expect(new TableLineage(tableFor, names).ensureTables()).resolves.toBeUndefined();
  });

  test("a disk round-trips exactly, with and without its optional fields", async () => {
    const bare = disk();
    const full = disk({
      baseSnapshot: "2026-11-25T11:41:00.7654321Z",
      baseSize: 5 * TIB,
      basePoint: newId(new Date(T0), "p"),
      activeRunId: newId(new Date(T0), "r"),
      lastRunId: newId(new Date(T0 - 1), "r"),
      lastSuccessAt: "2026-11-24T11:41:00.000Z",
    });
    for (const d of [bare, full]) {
      const added = await lineage.addDisk(d);
      expect(added).toStrictEqual(withEtag(d));
      const read = await lineage.getDisk(d.id);
      expect(read).toStrictEqual({ ...d, etag: added.etag });
    }
    expect(typeof (await lineage.getDisk(full.id))?.baseSize).toBe("number");
  });

  test("a run round-trips exactly, byte counts beyond Int32 included", async () => {
    const d = await lineage.addDisk(disk());
    const minimal = run(d.id, T0);
    const full = run(d.id, T0 + 1, {
      kind: "resync",
      detection: "compare",
      state: "failed",
      finishedAt: new Date(T0 + 60_000).toISOString(),
      sourceSnapshot: "2026-11-25T11:41:00.7654321Z",
      baseSnapshot: "2026-11-24T11:41:00.1111111Z",
      sourceSize: 5 * TIB,
      rangesWritten: 3_000_000_000,
      rangesCleared: 7,
      chunksTotal: 1_310_720,
      chunksDone: 1_310_719,
      bytesPlanned: 5 * TIB,
      bytesCopied: 5 * TIB - 4 * 1024 ** 2,
      bytesCleared: 2 ** 31,
      checkpoint: 4 * TIB + 4 * 1024 ** 2,
      backupSnapshot: "2026-11-25T11:45:00.1234567Z",
      restorePoint: newId(new Date(T0 + 1), "p"),
      reason: "PreviousSnapshotNotFound",
      error: "copy of chunk 17 failed: 503 ServerBusy",
    });
    for (const r of [minimal, full]) {
      const added = await lineage.addRun(r);
      expect(added).toStrictEqual(withEtag(r));
      expect(await lineage.getRun(d.id, r.id)).toStrictEqual({ ...r, etag: added.etag });
    }
    expect(await lineage.listRuns(d.id)).toStrictEqual([withEtag(full), withEtag(minimal)]);
  });

  test("numbers go on the wire as Edm.Double, so real Azure does not take them for Int32", async () => {
    const d = await lineage.addDisk(disk());
    const r = run(d.id, T0, { bytesPlanned: 5 * TIB, chunksDone: 3 });
    sent.length = 0;
    await lineage.addRun(r);
    const insert = sent.find((s) => s.method === "POST" && s.url.includes(names.runs));
    const body = JSON.parse(insert?.body ?? "{}") as Record<string, unknown>;
    expect(body).toMatchObject({
      bytesPlanned: 5 * TIB,
      "bytesPlanned@odata.type": "Edm.Double",
      chunksDone: 3,
      "chunksDone@odata.type": "Edm.Double",
      owner: "host-1:4242",
    });
    expect(body).not.toHaveProperty("sourceSize");
    expect(body).not.toHaveProperty("etag");
    expect(body).not.toHaveProperty("odata.etag");
  });

  test("a restore point round-trips exactly", async () => {
    const d = await lineage.addDisk(disk());
    const bare = point(d.id, T0);
    const verified = point(d.id, T0 + 5, {
      kind: "incremental",
      size: 3 * TIB + 512,
      verifiedAt: "2026-11-26T00:00:00.000Z",
      verifyResult: "identical",
    });
    for (const p of [bare, verified]) {
      const added = await lineage.addPoint(p);
      expect(added).toStrictEqual(withEtag(p));
      expect(await lineage.getPoint(d.id, p.id)).toStrictEqual({ ...p, etag: added.etag });
    }
  });

  test("runs list newest first within their disk, and a limit stops after one page", async () => {
    const d = await lineage.addDisk(disk());
    const other = await lineage.addDisk(disk());
    const runs = [0, 1, 2, 3, 4].map((i) => run(d.id, T0 + i * 1000));
    for (const i of [2, 0, 4, 1, 3]) await lineage.addRun(runs[i]);
    await lineage.addRun(run(other.id, T0 + 10_000));

    const newestFirst = [...runs].reverse().map((r) => r.id);
    expect((await lineage.listRuns(d.id)).map((r) => r.id)).toEqual(newestFirst);

    sent.length = 0;
    expect((await lineage.listRuns(d.id, 2)).map((r) => r.id)).toEqual(newestFirst.slice(0, 2));
    const queries = sent.filter((s) => s.method === "GET" && s.url.includes(names.runs));
    expect(queries).toHaveLength(1);
    expect(decodeURIComponent(queries[0].url)).toContain("$top=2");

    expect(await lineage.listRuns(d.id, 0)).toEqual([]);
    expect(await lineage.listRuns(d.id, 50)).toHaveLength(5);
    await expect(lineage.listRuns(d.id, -1)).rejects.toThrow(RangeError);
    expect(await lineage.listRuns(uniqueName("nodisk"))).toEqual([]);
  });

  test("restore points list newest first with a limit", async () => {
    const d = await lineage.addDisk(disk());
    const points = [0, 1, 2, 3].map((i) => point(d.id, T0 + i * 86_400_000));
    for (const i of [3, 1, 0, 2]) await lineage.addPoint(points[i]);
    const ids = [...points].reverse().map((p) => p.id);
    expect((await lineage.listPoints(d.id)).map((p) => p.id)).toEqual(ids);
    expect((await lineage.listPoints(d.id, 3)).map((p) => p.id)).toEqual(ids.slice(0, 3));
  });

  test("listDisks returns every disk with its etag", async () => {
    const a = await lineage.addDisk(disk());
    const b = await lineage.addDisk(disk({ baseSize: 2 * TIB }));
    const all = await lineage.listDisks();
    expect(all).toEqual(expect.arrayContaining([a, b]));
    const ids = all.map((x) => x.id);
    expect([...ids].sort()).toEqual(ids);
  });

  test("ETag guard: of two writers who read the same disk, the first update wins", async () => {
    const d = await lineage.addDisk(disk());
    const first = (await lineage.getDisk(d.id))!;
    const second = (await lineage.getDisk(d.id))!;
    expect(first.etag).toBe(second.etag);

    const winner = await lineage.updateDisk({ ...first, activeRunId: "r-20261125T114100123Z-aaaaaa" });
    expect(winner.etag).toBeDefined();
    expect(winner.etag).not.toBe(first.etag);

    const lost = lineage.updateDisk({ ...second, activeRunId: "r-20261125T114100123Z-bbbbbb" });
    await expect(lost).rejects.toThrow(ConflictError);
    await expect(lost).rejects.toThrow(new RegExp(`disk ${d.id}`));
    expect((await lineage.getDisk(d.id))?.activeRunId).toBe("r-20261125T114100123Z-aaaaaa");

    // Replace, not merge: a field left out of the record is cleared, which is how a lock is released.
    const { activeRunId: _released, ...unlocked } = winner;
    const after = await lineage.updateDisk({ ...unlocked, lastRunId: "r-20261125T114100123Z-aaaaaa" });
    expect(await lineage.getDisk(d.id)).toStrictEqual(after);
    expect(after).not.toHaveProperty("activeRunId");
  });

  test("ETag guard on runs and points too; updating a deleted row is NotFoundError", async () => {
    const d = await lineage.addDisk(disk());
    const r = await lineage.addRun(run(d.id, T0));
    const copying = await lineage.updateRun({ ...r, state: "copying", bytesCopied: 5 * TIB });
    expect(await lineage.getRun(d.id, r.id)).toStrictEqual(copying);
    await expect(lineage.updateRun({ ...r, state: "failed" })).rejects.toThrow(
      new ConflictError(
        `run ${r.id} of disk ${d.id} was changed by another writer since it was read; read it again and retry`,
      ),
    );

    const p = await lineage.addPoint(point(d.id, T0));
    const verified = await lineage.updatePoint({
      ...p,
      verifiedAt: "2026-11-26T00:00:00.000Z",
      verifyResult: "identical",
    });
    await expect(lineage.updatePoint({ ...p, verifyResult: "differs" })).rejects.toThrow(ConflictError);
    await lineage.deletePoint(d.id, p.id);
    await expect(lineage.updatePoint(verified)).rejects.toThrow(NotFoundError);
  });

  test("an update without an etag is refused instead of overwriting blindly", async () => {
    const d = await lineage.addDisk(disk());
    const { etag: _etag, ...unread } = d;
    await expect(
      lineage.updateDisk({ ...unread, activeRunId: "r-20261125T114100123Z-cccccc" }),
    ).rejects.toThrow(/no etag/);
    expect(await lineage.getDisk(d.id)).toStrictEqual(d);
  });

  test("adding an existing disk, run or point is a ConflictError and changes nothing", async () => {
    const d = await lineage.addDisk(disk());
    const dup = lineage.addDisk({ ...d, backupBlob: "other.vhd" });
    await expect(dup).rejects.toThrow(ConflictError);
    await expect(dup).rejects.toThrow(`disk ${d.id} already exists`);
    expect(await lineage.getDisk(d.id)).toStrictEqual(d);

    const r = await lineage.addRun(run(d.id, T0));
    await expect(lineage.addRun(r)).rejects.toThrow(
      new ConflictError(`run ${r.id} of disk ${d.id} already exists`),
    );
    const p = await lineage.addPoint(point(d.id, T0));
    await expect(lineage.addPoint(p)).rejects.toThrow(ConflictError);
  });

  test("no error message carries the account key", async () => {
    const d = await lineage.addDisk(disk());
    const err = (await lineage.addDisk(d).then(
      () => new Error("the duplicate was accepted"),
      (e: unknown) => e,
    )) as Error;
    expect(err).toBeInstanceOf(ConflictError);
    const key = testStorage().keys.devstoreaccount1;
    expect(err.message).not.toContain(key);
    expect(JSON.stringify(err)).not.toContain(key);
  });

  test("unknown disks, runs and points read as undefined", async () => {
    const d = await lineage.addDisk(disk());
    expect(await lineage.getDisk(uniqueName("nodisk"))).toBeUndefined();
    expect(await lineage.getRun(d.id, newId(new Date(T0), "r"))).toBeUndefined();
    expect(await lineage.getPoint(d.id, newId(new Date(T0), "p"))).toBeUndefined();
    expect(await lineage.getRun(uniqueName("nodisk"), newId(new Date(T0), "r"))).toBeUndefined();
  });

  test("deletePoint removes the point and ignores one already gone", async () => {
    const d = await lineage.addDisk(disk());
    const keep = await lineage.addPoint(point(d.id, T0));
    const drop = await lineage.addPoint(point(d.id, T0 + 1000));
    await lineage.deletePoint(d.id, drop.id);
    expect(await lineage.getPoint(d.id, drop.id)).toBeUndefined();
    expect(await lineage.listPoints(d.id)).toStrictEqual([keep]);
    await expect(lineage.deletePoint(d.id, drop.id)).resolves.toBeUndefined();
  });

  test("a disk id that cannot be a table key is refused before any request", async () => {
    sent.length = 0;
    await expect(lineage.addDisk(disk({ id: "a/b" }))).rejects.toThrow(/cannot be a table key/);
    expect(sent).toHaveLength(0);
  });
});
