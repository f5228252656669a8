/**
 * Verify on the shared Azurite (every point also gets digests when it is sealed, see
 * retention.test.ts): the base point passes against its source snapshot and gets
 * digests; a point whose backup snapshot was altered behind the engine's back (a page written to
 * the backup blob and snapshotted outside the engine, the row pointed at that snapshot) fails,
 * naming the page; a row naming another point's snapshot fails at the first range where the two
 * differ; after the next backup deletes the source snapshot, the point still verifies against its
 * digests, and an alteration is caught there too, narrowed to its window.
 */
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/compose";
import type { PageBlobClient } from "@azure/storage-blob";
import type { RestorePointRecord } from "../../lib/lineage";
import { differingPages, PAGE_SIZE, subtract, union } from "../../lib/ranges";
import { UnverifiableError, verifyPoint } from "../../lib/restore/verify";
import { digestsLocation } from "../../lib/digests/format";
import { recordSealDigests } from "../../lib/digests/seal";
import { backupLocation } from "../../lib/lineage/locations";
import { BACKUP_ACCOUNT, uniqueName } from "../support/testEnv";
import {
  backupAccountUrl,
  createDisk,
  MiB,
  readImage,
  seeded,
  serviceClient,
  testEngine,
  writeRandom,
  type TestDisk,
} from "../support/disks";
import { randomCycle } from "../support/cycles";

let engine: Engine;
let disk: TestDisk;
let diskId: string;
const rng = seeded(99);

function backupBlob() {
  return serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(diskId);
}

/** Points the row at another snapshot and returns a function that puts it back. */
async function repoint(point: RestorePointRecord, backupSnapshot: string): Promise<() => Promise<void>> {
  const current = (await engine.lineage.getPoint(diskId, point.id))!;
  await engine.lineage.updatePoint({ ...current, backupSnapshot });
  return async () => {
    const now = (await engine.lineage.getPoint(diskId, point.id))!;
    await engine.lineage.updatePoint({ ...now, backupSnapshot: current.backupSnapshot });
  };
}

async function pageIsValid(blob: PageBlobClient, offset: number): Promise<boolean> {
  const listed = await blob.getPageRanges(offset, PAGE_SIZE);
  return (listed.pageRange ?? []).length > 0;
}

/**
 * A snapshot of the backup blob with one page changed at `offset`, taken outside the engine; the
 * live blob gets its page back afterwards (written back, or cleared if it was empty).
 */
async function alteredSnapshot(offset: number): Promise<string> {
  const blob = backupBlob();
  const wasValid = await pageIsValid(blob, offset);
  const before = await blob.downloadToBuffer(offset, PAGE_SIZE);
  const page = Buffer.from(before);
  page[0] ^= 0xff;
  await blob.uploadPages(page, offset, PAGE_SIZE);
  const snap = (await blob.createSnapshot()).snapshot!;
  if (wasValid) await blob.uploadPages(before, offset, PAGE_SIZE);
  else await blob.clearPages(offset, PAGE_SIZE);
  return snap;
}

beforeAll(async () => {
  engine = await testEngine({ env: { DISKDELTA_SEGMENT_BYTES: String(8 * MiB) } });
  disk = await createDisk(20 * MiB);
  diskId = uniqueName("vfy");
  await addDisk(engine, { id: diskId, source: disk.url, backupAccount: backupAccountUrl() });
  await writeRandom(disk.client, 0, 3 * MiB, rng.bytes);
  await writeRandom(disk.client, 11 * MiB, 13 * MiB + 4096, rng.bytes);
  for (let cycle = 0; cycle < 2; cycle++) {
    if (cycle > 0) await randomCycle(disk.client, rng, cycle);
    expect((await backupDisk(engine, diskId, { trigger: "cli" })).state).toBe("succeeded");
  }
});
afterAll(() => engine.close());

test("the base point passes against its source snapshot; the result, time and digests are recorded", async () => {
  const r = await verifyPoint(engine, diskId);
  expect(r).toMatchObject({ ok: true, method: "source-snapshot" });
  expect(r.bytesChecked).toBeGreaterThan(5 * MiB);
  expect(r.windowsChecked).toBeGreaterThan(1);
  const point = (await engine.lineage.getPoint(diskId, r.pointId))!;
  expect(point.verifiedAt).toBe(r.verifiedAt);
  expect(point.verifyResult).toMatch(/^ok: equals source snapshot /);
  const disk = (await engine.lineage.getDisk(diskId))!;
  expect(point.digestsUrl).toBe(digestsLocation(backupLocation(disk), point.id).url);
  expect(point.digestsUrl).toContain(`/diskdelta/${diskId}.digests/${point.id}`);
  const digests = serviceClient(BACKUP_ACCOUNT)
    .getContainerClient("diskdelta")
    .getBlockBlobClient(`${diskId}.digests/${point.id}`);
  const props = await digests.getProperties();
  expect(props.metadata).toMatchObject({ diskdeltapoint: point.id, diskdeltasnapshot: point.backupSnapshot });
  // Compact: a few dozen bytes per window with data, nothing for empty ones.
  expect(props.contentLength).toBeLessThan(2048);
});

test("a point altered behind the engine's back fails, naming the page", async () => {
  const point = (await engine.lineage.listPoints(diskId))[0];
  const snapshot = backupBlob().withSnapshot(point.backupSnapshot);
  // One page inside data, one in a hole: a changed byte, and a page valid only in the restore point.
  for (const offset of [12 * MiB + 7 * PAGE_SIZE, 18 * MiB + 3 * PAGE_SIZE]) {
    const kind = (await pageIsValid(snapshot, offset)) ? "bytes" : "valid-ranges";
    const restore = await repoint(point, await alteredSnapshot(offset));
    try {
      const r = await verifyPoint(engine, diskId, { point: point.id });
      expect(r.ok).toBe(false);
      expect(r.firstDifference).toMatchObject({ start: offset, end: offset + PAGE_SIZE, kind });
      expect(r.summary).toContain(`page [${offset}, ${offset + PAGE_SIZE})`);
      const row = (await engine.lineage.getPoint(diskId, point.id))!;
      expect(row.verifyResult).toMatch(/^failed against source snapshot .*: page \[/);
    } finally {
      await restore();
    }
  }
  expect((await verifyPoint(engine, diskId, { point: point.id })).ok).toBe(true);
});

test("a row naming the previous point's snapshot fails at the first range where the two differ", async () => {
  const [newest, previous] = await engine.lineage.listPoints(diskId);
  const prefix = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(diskId);
  const a = await readImage(prefix.withSnapshot(newest.backupSnapshot));
  const b = await readImage(prefix.withSnapshot(previous.backupSnapshot));
  const mapDiff = union(subtract(a.valid, b.valid), subtract(b.valid, a.valid))[0]?.start ?? Infinity;
  const byteDiff = differingPages(a.bytes, b.bytes, 0)[0]?.start ?? Infinity;
  const expected = Math.min(mapDiff, byteDiff);
  expect(Number.isFinite(expected)).toBe(true);
  const restore = await repoint(newest, previous.backupSnapshot);
  try {
    const r = await verifyPoint(engine, diskId, { point: newest.id });
    expect(r.ok).toBe(false);
    expect(r.firstDifference!.start).toBe(expected);
  } finally {
    await restore();
  }
  expect((await verifyPoint(engine, diskId, { point: newest.id })).ok).toBe(true);
});

test("after the source snapshot is gone, verify checks the digests, and refuses digests recorded for another snapshot", async () => {
  const verified = (await engine.lineage.listPoints(diskId))[0];
  expect(verified.digestsUrl).toBeDefined();
  await randomCycle(disk.client, rng, 5);
  expect((await backupDisk(engine, diskId, { trigger: "cli" })).state).toBe("succeeded");
  // The engine deleted the old base: the point's source snapshot is gone.
  await expect(disk.client.withSnapshot(verified.sourceSnapshot).getProperties()).rejects.toMatchObject({
    statusCode: 404,
  });
  const r = await verifyPoint(engine, diskId, { point: verified.id });
  expect(r).toMatchObject({ ok: true, method: "digests" });
  expect((await engine.lineage.getPoint(diskId, verified.id))!.verifyResult).toMatch(
    /^ok: equals recorded digests/,
  );

  // Alter behind the engine's back: the row names a snapshot with one page changed in window 2.
  const offset = 2 * 4 * MiB + 3 * PAGE_SIZE;
  const blob = backupBlob();
  const original = await blob.withSnapshot(verified.backupSnapshot).downloadToBuffer(offset, PAGE_SIZE);
  const current = await blob.downloadToBuffer(offset, PAGE_SIZE);
  // Make the live blob equal the verified point at that page but for one byte, then snapshot it.
  const changed = Buffer.from(original);
  changed[0] ^= 0xff;
  await blob.uploadPages(changed, offset, PAGE_SIZE);
  const tampered = (await blob.createSnapshot()).snapshot!;
  await blob.uploadPages(current, offset, PAGE_SIZE);
  // Only the digests of the original snapshot exist; copy its metadata claim by pointing the row at the tampered one.
  const row = (await engine.lineage.getPoint(diskId, verified.id))!;
  await engine.lineage.updatePoint({ ...row, backupSnapshot: tampered });
  const bad = await verifyPoint(engine, diskId, { point: verified.id });
  expect(bad.ok).toBe(false);
  expect(bad.method).toBe("digests");
  // The digests were recorded for another snapshot: refused as a whole rather than misapplied.
  expect(bad.firstDifference!.detail).toMatch(/recorded for backup snapshot/);
  await engine.lineage.updatePoint({
    ...(await engine.lineage.getPoint(diskId, verified.id))!,
    backupSnapshot: verified.backupSnapshot,
  });
});

test("digests recorded for a snapshot catch a changed window of that snapshot's data (digests recorded on a copy)", async () => {
  // A snapshot cannot change, so the honest way to show the window check: record digests for a
  // snapshot S of the backup blob, then name S's digests for a snapshot T that differs in one page.
  const disk = (await engine.lineage.getDisk(diskId))!;
  const blob = backupBlob();
  const offset = 4 * MiB + 9 * PAGE_SIZE;
  // A page with data in both, so the two differ in bytes only and the window's MD5 must catch it.
  await writeRandom(blob, offset, offset + PAGE_SIZE, rng.bytes);
  const s = (await blob.createSnapshot()).snapshot!;
  const before = await blob.downloadToBuffer(offset, PAGE_SIZE);
  const altered = Buffer.from(before);
  altered[100] ^= 0x01;
  await blob.uploadPages(altered, offset, PAGE_SIZE);
  const t = (await blob.createSnapshot()).snapshot!;
  await blob.uploadPages(before, offset, PAGE_SIZE);
  const newest = (await engine.lineage.listPoints(diskId))[0];
  const fake = await engine.lineage.addPoint({
    ...newest,
    id: newest.id.replace(/-[0-9a-f]{6}$/, "-fa0e00"),
    backupSnapshot: s,
    sourceSnapshot: "",
    digestsUrl: undefined,
    verifiedAt: undefined,
    verifyResult: undefined,
    etag: undefined,
  });
  await recordSealDigests(engine, disk, fake);
  // Rename the digests' claimed snapshot to T (its metadata), as if they had been recorded for T.
  const digests = serviceClient(BACKUP_ACCOUNT)
    .getContainerClient("diskdelta")
    .getBlockBlobClient(`${diskId}.digests/${fake.id}`);
  const meta = (await digests.getProperties()).metadata!;
  await digests.setMetadata({ ...meta, diskdeltasnapshot: t });
  const row = (await engine.lineage.getPoint(diskId, fake.id))!;
  expect(row.digestsUrl).toBeDefined();
  await engine.lineage.updatePoint({ ...row, backupSnapshot: t });
  const r = await verifyPoint(engine, diskId, { point: fake.id });
  expect(r).toMatchObject({ ok: false, method: "digests" });
  expect(r.firstDifference).toMatchObject({ start: 4 * MiB, end: 8 * MiB, kind: "digest" });
  await engine.lineage.deletePoint(diskId, fake.id);
});

test("a point with neither source snapshot nor digests cannot be verified, and says why", async () => {
  const points = await engine.lineage.listPoints(diskId);
  // The oldest point: its source snapshot went with the next backup. Every point got digests at
  // seal; take this one's away (row and blob) to leave it with nothing to be checked against.
  const oldest = points[points.length - 1];
  await expect(disk.client.withSnapshot(oldest.sourceSnapshot).getProperties()).rejects.toMatchObject({
    statusCode: 404,
  });
  expect(oldest.digestsUrl).toBeDefined();
  await serviceClient(BACKUP_ACCOUNT)
    .getContainerClient("diskdelta")
    .getBlockBlobClient(`${diskId}.digests/${oldest.id}`)
    .delete();
  await expect(verifyPoint(engine, diskId, { point: oldest.id })).rejects.toThrow(
    /restore point .* digests .* are gone/,
  );
  const row = (await engine.lineage.getPoint(diskId, oldest.id))!;
  // The failed verify held the point while it read, and released it.
  expect(row.readingUntil).toBeUndefined();
  await engine.lineage.updatePoint({ ...row, digestsUrl: undefined });
  await expect(verifyPoint(engine, diskId, { point: oldest.id })).rejects.toThrow(UnverifiableError);
  await expect(verifyPoint(engine, diskId, { point: oldest.id })).rejects.toThrow(
    /no digests were recorded for it/,
  );
});
