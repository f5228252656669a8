/**
 * Backups of managed disks through the real @azure/arm-compute client and the ARM fake, on
 * Azurite behind the diff fixture (which answers managed-disk diffs as Azure does). An ext4-like
 * life — scattered block writes, discards, a grow, the disk deleted and recreated smaller under
 * its name — where after every run the restore point equals its source snapshot (size, valid
 * ranges, bytes); the first run writes only the valid ranges, every incremental only the pages
 * that changed and clears only the pages cleared (the proxy's requests are the measure); a
 * refused diff (base deleted, a recreated disk) becomes a resync writing only the difference;
 * nothing is left behind: one snapshot (the base), no open grant.
 */
import { ComputeManagementClient } from "@azure/arm-compute";
import type { Engine } from "../../lib/compose";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { normalize, totalBytes, type PageRange } from "../../lib/ranges";
import { isPutPage } from "../fixtures/diffProxy";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";
import { expectSameSparse, minimalDiff, sparseImage, type SparseImage } from "../contract/sparse";
import { backupAccountUrl, seeded, serviceClient } from "../support/disks";
import { BACKUP_ACCOUNT, uniqueName } from "../support/testEnv";

const GiB = 1024 * MiB;
const POLL = { updateIntervalInMs: 5 };
let world: ManagedWorld;
let engine: Engine;

beforeAll(async () => {
  world = await startManagedWorld();
  engine = await world.engine({ DISKDELTA_SEGMENT_BYTES: String(32 * MiB) });
});
afterAll(async () => world.close());

function arm(): ComputeManagementClient {
  return new ComputeManagementClient(
    world.arm.credential,
    world.arm.subscriptionId,
    world.arm.clientOptions(),
  );
}

type Rng = ReturnType<typeof seeded>;

/** What a filesystem does between two backups: 4 KiB block writes here and there, a file extent, a discard or two. */
async function guestCycle(diskId: string, rng: Rng, content: number): Promise<void> {
  const blocks = content / 4096;
  for (let i = rng.int(3, 8); i > 0; i--) {
    const start = rng.int(0, blocks - 1);
    const count = Math.min(rng.int(1, i === 1 ? 256 : 16), blocks - start);
    await world.arm.writeDisk(diskId, start * 4096, rng.bytes(count * 4096));
  }
  for (let i = rng.int(1, 3); i > 0; i--) {
    const start = rng.int(0, blocks - 1);
    const count = Math.min(rng.int(1, 128), blocks - start);
    await world.arm.clearDisk(diskId, start * 4096, count * 4096);
  }
}

interface Registered {
  id: string;
  rg: string;
  name: string;
  diskRes: string;
  container: string;
}

async function registered(content: number): Promise<Registered> {
  const rg = world.group();
  const name = "data0";
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name, sizeBytes: content });
  const id = uniqueName("m");
  const container = uniqueName("bk");
  await addDisk(engine, {
    id,
    source: diskRes,
    backupAccount: backupAccountUrl(world.proxy.url),
    backupContainer: container,
  });
  return { id, rg, name, diskRes, container };
}

/** Pages written and cleared on the backup blob since `mark` (a repeated write counts once). */
function backupWritesSince(mark: number, container: string): { written: PageRange[]; cleared: PageRange[] } {
  const of = (kind: string) =>
    normalize(
      world.proxy.requests
        .slice(mark)
        .filter(
          (r) => isPutPage(r) && r.headers["x-ms-page-write"] === kind && r.path.includes(`/${container}/`),
        )
        .map((r) => {
          const m = /bytes=(\d+)-(\d+)/.exec(String(r.headers["x-ms-range"] ?? r.headers.range))!;
          return { start: Number(m[1]), end: Number(m[2]) + 1 };
        }),
    );
  return { written: of("update"), cleared: of("clear") };
}

async function pointImage(
  d: Registered,
  runId: string,
): Promise<{ point: SparseImage; source: SparseImage }> {
  const run = (await engine.lineage.getRun(d.id, runId))!;
  const p = (await engine.lineage.getPoint(d.id, run.restorePoint!))!;
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient(d.container).getPageBlobClient(d.id);
  return {
    point: await sparseImage(backup.withSnapshot(p.backupSnapshot)),
    source: await sparseImage(world.arm.snapshotBlob(run.sourceSnapshot!)),
  };
}

async function expectNothingLeft(d: Registered): Promise<void> {
  const disk = (await engine.lineage.getDisk(d.id))!;
  const snapshots = (await world.arm.resources()).snapshots.filter((s) =>
    s.includes(`/resourceGroups/${d.rg}/`),
  );
  expect(snapshots).toEqual([disk.baseSnapshot]);
  expect(await world.arm.activeGrants()).toEqual([]);
}

test("an ext4-like life on a managed disk — writes, discards, a grow, recreated smaller — every point equals its snapshot, and each run writes only what changed", async () => {
  let content = 64 * MiB;
  const d = await registered(content);
  const rng = seeded(20261202);
  // mkfs: superblock and group descriptors, inode tables, a journal, a few files.
  await world.arm.writeDisk(d.diskRes, 0, rng.bytes(64 * 1024));
  await world.arm.writeDisk(d.diskRes, 8 * MiB, rng.bytes(2 * MiB));
  await world.arm.writeDisk(d.diskRes, 40 * MiB, rng.bytes(4 * MiB + 8192));
  let previous: SparseImage | undefined;
  for (let cycle = 0; cycle < 9; cycle++) {
    let resync = false;
    if (cycle > 0) await guestCycle(d.diskRes, rng, content);
    if (cycle === 3) {
      // Grow the disk to 1 GiB (Azure resizes in whole GiB) and write past the old end.
      await arm().disks.update(d.rg, d.name, { diskSizeGB: 1 }, POLL);
      content = GiB;
      await world.arm.writeDisk(d.diskRes, 700 * MiB, rng.bytes(MiB));
    }
    if (cycle === 6) {
      // Managed disks never shrink in place: this one is deleted and made again, smaller, under
      // its name. The base is a snapshot of the old disk now, and the service refuses that diff.
      await arm().disks.delete(d.rg, d.name, POLL);
      content = 48 * MiB;
      await world.arm.createDisk({ resourceGroup: d.rg, name: d.name, sizeBytes: content });
      await world.arm.writeDisk(d.diskRes, 0, previous!.data[0].subarray(0, 64 * 1024));
      await world.arm.writeDisk(d.diskRes, 8 * MiB, rng.bytes(MiB));
      resync = true;
    }
    const mark = world.proxy.requests.length;
    const run = await backupDisk(engine, d.id, { trigger: "cli" });
    expect({ cycle, state: run.state }).toEqual({ cycle, state: "succeeded" });
    expect({ cycle, kind: run.kind, detection: run.detection }).toEqual({
      cycle,
      kind: cycle === 0 ? "full" : resync ? "resync" : "incremental",
      detection: cycle === 0 ? "valid-ranges" : resync ? "compare" : "service-diff",
    });
    const { point, source } = await pointImage(d, run.id);
    expectSameSparse(point, source, `cycle ${cycle}`);
    expect(point.size).toBe(content + 512);
    const io = backupWritesSince(mark, d.container);
    if (cycle === 0) {
      // A first run copies the valid ranges (data and the VHD footer) and nothing else.
      expect(io.written).toEqual(source.valid);
      expect(run.bytesCopied).toBe(totalBytes(source.valid));
    } else if (resync) {
      // Compare: writes the pages that differ from the backup blob (shrunk to the new size), clears the rest.
      const expected = minimalDiff({ ...previous!, size: Math.min(previous!.size, source.size) }, source);
      expect(io.written).toEqual(expected.writes);
      expect(run.reason).toMatch(/PreviousSnapshotOperationNotSupported/);
    } else {
      const expected = minimalDiff(previous!, source);
      expect(io.written).toEqual(expected.writes);
      expect(io.cleared).toEqual(expected.clears);
      expect(run.bytesCopied).toBe(totalBytes(expected.writes));
      expect(run.bytesCleared).toBe(totalBytes(expected.clears));
    }
    previous = source;
    await expectNothingLeft(d);
  }
});

test("a base deleted behind diskdelta's back: the diff is refused (PreviousSnapshotNotFound) and the run resyncs, writing only the difference", async () => {
  const d = await registered(32 * MiB);
  const rng = seeded(5);
  await world.arm.writeDisk(d.diskRes, 0, rng.bytes(3 * MiB));
  await backupDisk(engine, d.id, { trigger: "cli" });
  const base = (await engine.lineage.getDisk(d.id))!.baseSnapshot!;
  await arm().snapshots.delete(d.rg, base.split("/").pop()!, POLL);
  await world.arm.writeDisk(d.diskRes, 16 * MiB, rng.bytes(64 * 1024));
  const mark = world.proxy.requests.length;
  const run = await backupDisk(engine, d.id, { trigger: "cli" });
  expect(run).toMatchObject({ state: "succeeded", kind: "resync", detection: "compare" });
  expect(run.reason).toMatch(/PreviousSnapshotNotFound/);
  expect(backupWritesSince(mark, d.container).written).toEqual([
    { start: 16 * MiB, end: 16 * MiB + 64 * 1024 },
  ]);
  const { point, source } = await pointImage(d, run.id);
  expectSameSparse(point, source, "after the resync");
  await expectNothingLeft(d);
  // And the chain goes on incrementally from the resync's snapshot.
  await world.arm.writeDisk(d.diskRes, 0, rng.bytes(4096));
  const next = await backupDisk(engine, d.id, { trigger: "cli" });
  expect(next).toMatchObject({ kind: "incremental", detection: "service-diff", bytesCopied: 4096 });
});

test("nothing changed: the run is unchanged, its snapshot deleted, the base kept, no grant left", async () => {
  const d = await registered(32 * MiB);
  await world.arm.writeDisk(d.diskRes, MiB, Buffer.alloc(MiB, 3));
  await backupDisk(engine, d.id, { trigger: "cli" });
  const base = (await engine.lineage.getDisk(d.id))!.baseSnapshot;
  const run = await backupDisk(engine, d.id, { trigger: "cli" });
  expect(run.state).toBe("unchanged");
  expect((await engine.lineage.getDisk(d.id))!.baseSnapshot).toBe(base);
  await expectNothingLeft(d);
});

test("ARM's snapshot limit (7 per disk per 5 minutes) fails the run with ARM's reason; the disk is released and nothing leaks", async () => {
  const limited = await startManagedWorld({ snapshotRateLimit: { count: 2, windowMs: 10 * 60_000 } });
  try {
    const e = await limited.engine();
    const rg = limited.group();
    const diskRes = await limited.arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: 32 * MiB });
    const id = uniqueName("m");
    await addDisk(e, { id, source: diskRes, backupAccount: backupAccountUrl(limited.proxy.url) });
    await limited.arm.writeDisk(diskRes, 0, Buffer.alloc(4096, 1));
    await backupDisk(e, id, { trigger: "cli" });
    await limited.arm.writeDisk(diskRes, 0, Buffer.alloc(4096, 2));
    await backupDisk(e, id, { trigger: "cli" });
    await limited.arm.writeDisk(diskRes, 0, Buffer.alloc(4096, 3));
    const err = (await backupDisk(e, id, { trigger: "cli" }).catch((x: unknown) => x)) as Error;
    expect(err.message).toMatch(/OperationNotAllowed.*incremental snapshots per disk/);
    expect((await e.lineage.getDisk(id))!.activeRunId).toBeUndefined();
    expect((await limited.arm.resources()).snapshots).toHaveLength(1);
    expect(await limited.arm.activeGrants()).toEqual([]);
  } finally {
    await limited.close();
  }
});
