/**
 * The service-diff path, exercised through the diff proxy (Azurite cannot answer diffs): cycles
 * end byte-identical; listings page and segment; every refusal code becomes a resync that ends
 * byte-identical without a full copy; transient faults are retried; a first run on a sparse disk
 * reads and writes only valid ranges; bytesCopied equals the bytes of the changed pages.
 */
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/compose";
import { normalize, totalBytes, type PageRange } from "../../lib/ranges";
import { startDiffProxy, isDiffRequest, isGetBlob, isPutPage, type DiffProxy } from "../fixtures/diffProxy";
import { randomCycle } from "../support/cycles";
import {
  backupAccountUrl,
  createDisk,
  expectSameImage,
  MiB,
  readImage,
  seeded,
  serviceClient,
  testEngine,
  writeRandom,
  type TestDisk,
  snapshotsIn,
} from "../support/disks";
import { SOURCE_ACCOUNT, BACKUP_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

let proxy: DiffProxy;
let engine: Engine;
const SEGMENT = 8 * MiB;

beforeAll(async () => {
  const s = testStorage();
  proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  engine = await testEngine({
    env: { DISKDELTA_SEGMENT_BYTES: String(SEGMENT), DISKDELTA_RETRY_BASE_MS: "5" },
  });
});
afterAll(async () => {
  await engine.close();
  await proxy.close();
});
beforeEach(() => {
  proxy.clearFaults();
  proxy.pageSize = 10_000;
});

async function registered(size: number): Promise<{ id: string; disk: TestDisk }> {
  const disk = await createDisk(size, proxy.url);
  const id = uniqueName("d");
  await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl(proxy.url) });
  return { id, disk };
}

async function expectPointMatches(id: string, runId: string, disk: TestDisk, what: string) {
  const run = (await engine.lineage.getRun(id, runId))!;
  const point = (await engine.lineage.getPoint(id, run.restorePoint!))!;
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(id);
  expectSameImage(
    await readImage(backup.withSnapshot(point.backupSnapshot)),
    await readImage(disk.client.withSnapshot(run.sourceSnapshot!)),
    what,
  );
}

const requestsSince = (mark: number) => proxy.requests.slice(mark);

test("12 cycles through the service diff, paged 3 ranges at a time over 8 MiB segments: every restore point is byte-identical", async () => {
  const { id, disk } = await registered(20 * MiB);
  const rng = seeded(7);
  await writeRandom(disk.client, 0, 2 * MiB, rng.bytes);
  proxy.pageSize = 3;
  for (let cycle = 0; cycle < 12; cycle++) {
    if (cycle > 0) await randomCycle(disk.client, rng, cycle);
    const mark = proxy.requests.length;
    const run = await backupDisk(engine, id, { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    expect(run.detection).toBe(cycle === 0 ? "valid-ranges" : "service-diff");
    expect(run.kind).toBe(cycle === 0 ? "full" : "incremental");
    await expectPointMatches(id, run.id, disk, `cycle ${cycle}`);
    if (cycle > 0) {
      const diffs = requestsSince(mark).filter(isDiffRequest);
      const segmentsAsked = new Set(diffs.map((r) => r.headers["x-ms-range"]));
      expect(segmentsAsked.size).toBe(Math.ceil(run.sourceSize! / SEGMENT));
      if (run.rangesWritten + run.rangesCleared > 3 * segmentsAsked.size) {
        expect(diffs.some((r) => r.query.has("marker"))).toBe(true);
      }
    }
  }
});

test("an incremental run copies exactly the changed pages and clears exactly the cleared ones", async () => {
  const { id, disk } = await registered(16 * MiB);
  const rng = seeded(11);
  await writeRandom(disk.client, 0, 16 * MiB, rng.bytes);
  const full = await backupDisk(engine, id, { trigger: "cli" });
  expect(full.bytesCopied).toBe(16 * MiB);
  const written: PageRange[] = [];
  for (const [start, end] of [
    [512, 4096],
    [5 * MiB - 1024, 5 * MiB + 8192],
    [9 * MiB, 9 * MiB + 512],
    [15 * MiB, 16 * MiB],
  ]) {
    written.push(await writeRandom(disk.client, start, end, rng.bytes));
  }
  const cleared = [
    { start: 2 * MiB, end: 2 * MiB + 64 * 1024 },
    { start: 12 * MiB, end: 16 * MiB },
  ];
  for (const c of cleared) await disk.client.clearPages(c.start, c.end - c.start);
  const changed = normalize(written);
  const run = await backupDisk(engine, id, { trigger: "cli" });
  expect(run.detection).toBe("service-diff");
  // The clear of [12 MiB, 16 MiB) overlaps the write at 15 MiB: that write is gone again.
  const stillWritten = normalize(written.filter((w) => w.start < 12 * MiB));
  expect(run.bytesCopied).toBe(totalBytes(stillWritten));
  expect(run.bytesCleared).toBe(totalBytes(cleared));
  expect(totalBytes(changed)).toBeGreaterThan(run.bytesCopied);
  await expectPointMatches(id, run.id, disk, "incremental");
});

test("a first run on a sparse disk reads and writes only its valid ranges", async () => {
  const { id, disk } = await registered(64 * MiB);
  const rng = seeded(3);
  const valid = normalize([
    await writeRandom(disk.client, 3 * MiB, 3 * MiB + 4096, rng.bytes),
    await writeRandom(disk.client, 30 * MiB - 512, 30 * MiB + 512, rng.bytes),
    await writeRandom(disk.client, 60 * MiB, 61 * MiB, rng.bytes),
  ]);
  const mark = proxy.requests.length;
  const run = await backupDisk(engine, id, { trigger: "cli" });
  expect(run.kind).toBe("full");
  expect(run.bytesCopied).toBe(totalBytes(valid));
  const rangeOf = (h: string | string[] | undefined) => {
    const m = /bytes=(\d+)-(\d+)/.exec(String(h));
    return { start: Number(m![1]), end: Number(m![2]) + 1 };
  };
  const reads = requestsSince(mark)
    .filter((r) => isGetBlob(r) && r.path.includes(disk.container))
    .map((r) => rangeOf(r.headers["x-ms-range"]));
  const writes = requestsSince(mark)
    .filter((r) => isPutPage(r) && r.headers["x-ms-page-write"] === "update")
    .map((r) => rangeOf(r.headers["x-ms-range"]));
  expect(totalBytes(reads)).toBe(totalBytes(valid));
  expect(normalize(reads)).toEqual(valid);
  expect(normalize(writes)).toEqual(valid);
  await expectPointMatches(id, run.id, disk, "sparse full");
});

describe.each([
  [409, "BlobOverwritten"],
  [409, "PreviousSnapshotNotFound"],
  [409, "PreviousSnapshotOperationNotSupported"],
  [400, "PreviousSnapshotCannotBeNewer"],
  [409, "BlobGenerationMismatch"],
])("when the service refuses the diff with %i %s", (status, code) => {
  test("the run becomes a resync that ends byte-identical, without a full copy", async () => {
    const { id, disk } = await registered(12 * MiB);
    const rng = seeded(status + code.length);
    await writeRandom(disk.client, 0, 12 * MiB, rng.bytes);
    await backupDisk(engine, id, { trigger: "cli" });
    await writeRandom(disk.client, 4 * MiB, 4 * MiB + 8192, rng.bytes);
    await disk.client.clearPages(10 * MiB, 4096);
    proxy.inject({ status, code, match: isDiffRequest });
    const run = await backupDisk(engine, id, { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    expect(run.kind).toBe("resync");
    expect(run.detection).toBe("compare");
    expect(run.reason).toContain(code);
    expect(run.bytesCopied).toBe(8192);
    expect(run.bytesCleared).toBe(4096);
    await expectPointMatches(id, run.id, disk, `resync after ${code}`);
  });
});

test("runs succeed through injected 500s, 503s and connection resets on every kind of call", async () => {
  const { id, disk } = await registered(12 * MiB);
  const rng = seeded(99);
  await writeRandom(disk.client, 0, 6 * MiB, rng.bytes);
  const faults = () => {
    proxy.inject({ status: 503, code: "ServerBusy", match: isDiffRequest, times: 2 });
    proxy.inject({ status: 500, code: "InternalError", match: isPutPage, times: 2 });
    proxy.inject({ status: 0, reset: true, match: isGetBlob, times: 2 });
    proxy.inject({
      status: 503,
      code: "ServerBusy",
      match: (r) => r.query.get("comp") === "snapshot",
      times: 1,
    });
  };
  faults();
  const first = await backupDisk(engine, id, { trigger: "cli" });
  expect(first.state).toBe("succeeded");
  await expectPointMatches(id, first.id, disk, "full through faults");
  await writeRandom(disk.client, 5 * MiB, 7 * MiB, rng.bytes);
  await disk.client.clearPages(0, MiB);
  faults();
  const second = await backupDisk(engine, id, { trigger: "cli" });
  expect(second.state).toBe("succeeded");
  expect(second.detection).toBe("service-diff");
  await expectPointMatches(id, second.id, disk, "incremental through faults");
});

test("a permanent error fails the run with its reason, keeps every restore point, and the next run succeeds", async () => {
  const { id, disk } = await registered(8 * MiB);
  const rng = seeded(5);
  await writeRandom(disk.client, 0, 8 * MiB, rng.bytes);
  const first = await backupDisk(engine, id, { trigger: "cli" });
  await writeRandom(disk.client, MiB, 2 * MiB, rng.bytes);
  proxy.inject({ status: 403, code: "AuthorizationPermissionMismatch", match: isPutPage, times: 1 });
  await expect(backupDisk(engine, id, { trigger: "cli" })).rejects.toThrow(/AuthorizationPermissionMismatch/);
  const failed = (await engine.lineage.listRuns(id))[0];
  expect(failed.state).toBe("failed");
  expect(failed.error).toMatch(/AuthorizationPermissionMismatch/);
  await expectPointMatches(id, first.id, disk, "first point after a failed run");
  const next = await backupDisk(engine, id, { trigger: "cli" });
  expect(next.state).toBe("succeeded");
  expect(next.kind).toBe("incremental");
  expect(next.bytesCopied).toBe(MiB);
  await expectPointMatches(id, next.id, disk, "after the failure");
  const snaps = await snapshotsIn(SOURCE_ACCOUNT, disk.container);
  expect(snaps).toEqual([next.sourceSnapshot]);
});
