/**
 * Retention and the after-seal hook on the shared Azurite: each sealed point gets digests (read
 * in full on Azurite, incrementally where the backup endpoint answers diffs correctly, here the
 * diff proxy) and the disk's policy is applied: the backup snapshots, digests and rows of the
 * points it drops really go, the newest point always stays, and a point a restore is reading
 * stays until the restore is done; a point marked for deletion is refused to a restore before
 * anything is created; `prune --dry-run` deletes nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { addDisk, setDisk, type RetentionInput } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { type Logger } from "../../lib/core/logger";
import type { Engine } from "../../lib/compose";
import { applyRetention } from "../../lib/retention/apply";
import type { RestorePointRecord } from "../../lib/lineage/types";
import { holdPoint, type PointHold } from "../../lib/restore/hold";
import { restoreToFile } from "../../lib/restore/toFile";
import { verifyPoint } from "../../lib/restore/verify";
import { startDiffProxy, isDiffRequest, type DiffProxy } from "../fixtures/diffProxy";
import { BACKUP_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";
import {
  backupAccountUrl,
  createDisk,
  MiB,
  readImage,
  seeded,
  serviceClient,
  snapshotsIn,
  testEngine,
  writeRandom,
  type TestDisk,
} from "../support/disks";

const rng = seeded(2026);
const SEGMENT = 8 * MiB;
let engine: Engine;
let scratch: string;
const logs: string[] = [];
const log: Logger = {
  info: (m) => logs.push(m),
  warn: (m) => logs.push(`warn: ${m}`),
  error: (m) => logs.push(`error: ${m}`),
};

beforeAll(async () => {
  engine = await testEngine({ env: { DISKDELTA_SEGMENT_BYTES: String(SEGMENT) }, log });
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-retention-"));
});
afterAll(async () => {
  await engine.close();
  fs.rmSync(scratch, { recursive: true, force: true });
});

async function newDisk(
  size: number,
  retention: RetentionInput,
  baseUrl?: string,
): Promise<{ id: string; disk: TestDisk }> {
  const disk = await createDisk(size, baseUrl);
  const id = uniqueName("ret");
  await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl(baseUrl), retention });
  await writeRandom(disk.client, 0, 2 * MiB, rng.bytes);
  return { id, disk };
}

async function backup(id: string, disk: TestDisk, e: Engine = engine): Promise<string> {
  await writeRandom(disk.client, rng.int(0, 30) * 512 * 64, rng.int(31, 60) * 512 * 64, rng.bytes);
  const run = await backupDisk(e, id, { trigger: "cli" });
  expect(run.state).toBe("succeeded");
  return run.restorePoint!;
}

/** Names of the digest blobs of a disk. */
async function digestBlobs(id: string): Promise<string[]> {
  const names: string[] = [];
  for await (const b of serviceClient(BACKUP_ACCOUNT)
    .getContainerClient("diskdelta")
    .listBlobsFlat({ prefix: `${id}.digests/` }))
    names.push(b.name.slice(`${id}.digests/`.length));
  return names.sort();
}

async function backupSnapshots(id: string): Promise<string[]> {
  // The prefix also matches `<id>.digests/…`, block blobs that have no snapshots.
  return (await snapshotsIn(BACKUP_ACCOUNT, "diskdelta", id)).sort();
}

test("after every seal: digests recorded, the policy applied; dropped points lose snapshot, digests and row together", async () => {
  const { id, disk } = await newDisk(12 * MiB, {
    keepLast: 2,
    keepDaily: 0,
    keepWeekly: 0,
    keepMonthly: 0,
  });
  const sealed: string[] = [];
  for (let i = 0; i < 4; i++) sealed.push(await backup(id, disk));
  const points = await engine.lineage.listPoints(id);
  expect(points.map((p) => p.id)).toEqual([sealed[3], sealed[2]]);
  // Only the kept points' snapshots remain in the backup account, and only their digests.
  expect(await backupSnapshots(id)).toEqual(points.map((p) => p.backupSnapshot).sort());
  expect(await digestBlobs(id)).toEqual([sealed[2], sealed[3]].sort());
  for (const p of points) expect(p.digestsUrl).toContain(`/${id}.digests/${p.id}`);
  // The digests recorded at seal make the older point verifiable though its source snapshot is gone.
  await expect(disk.client.withSnapshot(points[1].sourceSnapshot).getProperties()).rejects.toMatchObject({
    statusCode: 404,
  });
  expect(await verifyPoint(engine, id, { point: points[1].id })).toMatchObject({
    ok: true,
    method: "digests",
  });
});

test("keeping nothing still keeps the newest point; prune --dry-run lists what would go and why, deleting nothing", async () => {
  const { id, disk } = await newDisk(8 * MiB, {
    keepLast: 5,
    keepDaily: 0,
    keepWeekly: 0,
    keepMonthly: 0,
  });
  const sealed: string[] = [];
  for (let i = 0; i < 3; i++) sealed.push(await backup(id, disk));
  await setDisk(engine, id, { retention: { keepLast: 0 } });
  const dry = await applyRetention(engine, id, { dryRun: true });
  expect(dry.keep.map((k) => k.id)).toEqual([sealed[2]]);
  expect(dry.keep[0].reasons).toContain("newest restore point");
  expect(dry.delete.map((d) => d.id)).toEqual([sealed[1], sealed[0]]);
  expect(dry.delete[0].reasons[0]).toMatch(/^outside the policy \(last 0, daily 0, weekly 0, monthly 0\)/);
  expect(dry.deleted).toEqual([]);
  expect(await engine.lineage.listPoints(id)).toHaveLength(3);
  expect(await backupSnapshots(id)).toHaveLength(3);

  const real = await applyRetention(engine, id);
  expect(real.deleted.sort()).toEqual([sealed[0], sealed[1]].sort());
  const left = await engine.lineage.listPoints(id);
  expect(left.map((p) => p.id)).toEqual([sealed[2]]);
  expect(await backupSnapshots(id)).toEqual([left[0].backupSnapshot]);
  // Applying again changes nothing: idempotent.
  expect((await applyRetention(engine, id)).deleted).toEqual([]);
  // And the next backup is still incremental from the kept base.
  await writeRandom(disk.client, 5 * MiB, 5 * MiB + 4096, rng.bytes);
  const next = await backupDisk(engine, id, { trigger: "cli" });
  expect(next).toMatchObject({ state: "succeeded", kind: "incremental" });
});

test("a point a restore is reading stays until the restore is done; then it goes", async () => {
  const { id, disk } = await newDisk(32 * MiB, {
    keepLast: 3,
    keepDaily: 0,
    keepWeekly: 0,
    keepMonthly: 0,
  });
  // Dense data in every segment, so the restore reads for a while after its first segment.
  await writeRandom(disk.client, 0, 32 * MiB, rng.bytes);
  const older = await backup(id, disk);
  await backup(id, disk);
  await setDisk(engine, id, { retention: { keepLast: 1 } });
  const expected = await readImage(
    serviceClient(BACKUP_ACCOUNT)
      .getContainerClient("diskdelta")
      .getPageBlobClient(id)
      .withSnapshot((await engine.lineage.getPoint(id, older))!.backupSnapshot),
  );
  const file = path.join(scratch, `${id}.img`);
  let retention: ReturnType<typeof applyRetention> | undefined;
  const slow: Engine = { ...engine, config: { ...engine.config, copyConcurrency: 1 } };
  const restored = await restoreToFile(slow, id, {
    point: older,
    path: file,
    onProgress: () => {
      // While the restore still has segments to read, retention runs.
      retention ??= applyRetention(engine, id);
    },
  });
  const during = await retention!;
  expect(restored.pointId).toBe(older);
  // The plan keeps a held point, saying why (a hold that lands after the plan is caught by the
  // delete mark instead, and reported in `spared`).
  expect(during.keep.find((k) => k.id === older)?.reasons).toEqual([
    expect.stringMatching(/^being read by a restore until /),
  ]);
  expect(during.deleted).toEqual([]);
  expect(fs.readFileSync(file).equals(expected.bytes)).toBe(true);
  // Released when done: the hold is cleared, and the next apply deletes the point.
  expect((await engine.lineage.getPoint(id, older))!.readingUntil).toBeUndefined();
  expect((await applyRetention(engine, id)).deleted).toEqual([older]);
  expect(await engine.lineage.getPoint(id, older)).toBeUndefined();
});

test("a hold and retention's delete mark race on the row's ETag: a held point is spared, a marked one refused to a restore", async () => {
  const { id, disk } = await newDisk(8 * MiB, {
    keepLast: 5,
    keepDaily: 0,
    keepWeekly: 0,
    keepMonthly: 0,
  });
  const older = await backup(id, disk);
  await backup(id, disk);
  await setDisk(engine, id, { retention: { keepLast: 1 } });

  const hold = await holdPoint(engine, (await engine.lineage.getPoint(id, older))!, "test reader");
  const spared = await applyRetention(engine, id);
  expect(spared.keep.map((k) => k.id)).toContain(older);
  expect(spared.deleted).toEqual([]);
  expect(await engine.lineage.getPoint(id, older)).toBeDefined();
  await hold.release();

  // A reader whose hold lands after retention planned and read the row, just before the mark:
  // the mark's ETag no longer matches, retention reads the row again and spares the point.
  let late: PointHold | undefined;
  const lineage = new Proxy(engine.lineage, {
    get(target, prop, receiver) {
      if (prop === "updatePoint") {
        return async (point: RestorePointRecord) => {
          if (point.id === older && point.deletingSince && !late)
            late = await holdPoint(engine, (await target.getPoint(id, older))!, "late reader");
          return target.updatePoint(point);
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const raced = await applyRetention({ ...engine, lineage }, id);
  expect(late).toBeDefined();
  expect(raced.delete.map((d) => d.id)).toEqual([older]);
  expect(raced.spared).toEqual([{ id: older, reason: expect.stringMatching(/^a restore reads it until /) }]);
  expect(raced.deleted).toEqual([]);
  expect((await engine.lineage.getPoint(id, older))!.deletingSince).toBeUndefined();
  await late!.release();

  // An apply that marked the point and stopped (a crash) leaves the mark; restores refuse it.
  const row = (await engine.lineage.getPoint(id, older))!;
  await engine.lineage.updatePoint({ ...row, deletingSince: new Date().toISOString() });
  const file = path.join(scratch, `${id}-marked.img`);
  await expect(restoreToFile(engine, id, { point: older, path: file })).rejects.toThrow(
    new RegExp(`restore point ${older} of disk ${id} is being deleted by retention`),
  );
  expect(fs.existsSync(file)).toBe(false);
  expect(fs.existsSync(`${file}.diskdelta-partial`)).toBe(false);
  // The next apply finishes the delete.
  expect((await applyRetention(engine, id)).deleted).toEqual([older]);
  expect(await backupSnapshots(id)).toHaveLength(1);
});

describe("digests at seal where the backup endpoint answers diffs (diff proxy)", () => {
  let proxy: DiffProxy;
  beforeAll(async () => {
    const s = testStorage();
    proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  });
  afterAll(() => proxy.close());

  test("only the windows the run wrote are read, and the digests equal a full recording", async () => {
    const { id, disk } = await newDisk(
      24 * MiB,
      { keepLast: 10, keepDaily: 0, keepWeekly: 0, keepMonthly: 0 },
      proxy.url,
    );
    await writeRandom(disk.client, 0, 24 * MiB, rng.bytes);
    await backup(id, disk);
    // One page in window 1 and a clear in window 4: two windows of six change.
    await writeRandom(disk.client, 4 * MiB + 512 * 7, 4 * MiB + 512 * 8, rng.bytes);
    await disk.client.clearPages(16 * MiB + 512 * 3, 1024);
    logs.length = 0;
    proxy.requests.length = 0;
    const run = await backupDisk(engine, id, { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    const recorded = logs.find((m) => m.startsWith(`restore point ${run.restorePoint}: digests recorded`));
    expect(recorded).toMatch(/\(incremental, 2 windows read, 0 known from the copy\)/);
    // The run itself knew which windows it wrote: no diff of the backup blob was needed to find them.
    const backupDiffs = proxy.requests.filter((r) => isDiffRequest(r) && r.path.includes(`/diskdelta/${id}`));
    expect(backupDiffs).toHaveLength(0);

    const digests = serviceClient(BACKUP_ACCOUNT)
      .getContainerClient("diskdelta")
      .getBlockBlobClient(`${id}.digests/${run.restorePoint}`);
    const incremental = await digests.downloadToBuffer();
    // A verify against the source snapshot reads every window and records the digests afresh.
    const verified = await verifyPoint(engine, id, { point: run.restorePoint });
    expect(verified).toMatchObject({ ok: true, method: "source-snapshot" });
    expect((await digests.downloadToBuffer()).equals(incremental)).toBe(true);
  });
});

test("digests of windows the run wrote whole in one part come from the copy, and equal a recording that reads them", async () => {
  const disk = await createDisk(32 * MiB);
  const id = uniqueName("ret");
  await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl() });
  // Window 0 whole; one piece across the boundary of windows 1 and 2 (one request, a part in each);
  // window 3 in two pieces (two parts: read back); window 6 one piece.
  await writeRandom(disk.client, 0, 4 * MiB, rng.bytes);
  await writeRandom(disk.client, 7 * MiB, 9 * MiB, rng.bytes);
  await writeRandom(disk.client, 12 * MiB, 12 * MiB + 64 * 1024, rng.bytes);
  await writeRandom(disk.client, 14 * MiB, 14 * MiB + 512, rng.bytes);
  await writeRandom(disk.client, 25 * MiB, 26 * MiB, rng.bytes);
  const digestsOf = (point: string) =>
    serviceClient(BACKUP_ACCOUNT)
      .getContainerClient("diskdelta")
      .getBlockBlobClient(`${id}.digests/${point}`);
  const recordedLine = (point: string) =>
    logs.find((m) => m.startsWith(`restore point ${point}: digests recorded`));
  /** Verifying against the source snapshot reads every window and records the digests afresh: they must not change. */
  const expectSameAsRecordedAfresh = async (point: string) => {
    const fromCopy = await digestsOf(point).downloadToBuffer();
    expect(await verifyPoint(engine, id, { point })).toMatchObject({ ok: true, method: "source-snapshot" });
    expect((await digestsOf(point).downloadToBuffer()).equals(fromCopy)).toBe(true);
  };

  logs.length = 0;
  const first = await backupDisk(engine, id, { trigger: "cli" });
  expect(first.state).toBe("succeeded");
  expect(recordedLine(first.restorePoint!)).toMatch(/\(full, 1 window read, 4 known from the copy\)/);
  await expectSameAsRecordedAfresh(first.restorePoint!);

  // Incremental (compare on Azurite): window 5 written whole is known; one page in window 0 is a
  // part of it only, so window 0 is read; a page cleared in window 6 makes it read too.
  await writeRandom(disk.client, 20 * MiB, 24 * MiB, rng.bytes);
  await writeRandom(disk.client, 512 * 9, 512 * 10, rng.bytes);
  await disk.client.clearPages(25 * MiB, 512);
  logs.length = 0;
  const next = await backupDisk(engine, id, { trigger: "cli" });
  expect(next).toMatchObject({ state: "succeeded", kind: "incremental" });
  expect(recordedLine(next.restorePoint!)).toMatch(/\(incremental, 2 windows read, 1 known from the copy\)/);
  await expectSameAsRecordedAfresh(next.restorePoint!);
});
