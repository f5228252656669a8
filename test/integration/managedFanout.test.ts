/**
 * A managed disk's large change set fanned out to queue workers in one process (as one Functions
 * instance runs a batch of queue messages at once): the planner and every worker open the run's
 * snapshot, each delivery twice and the last ones at the same instant, so opens and closes of one
 * snapshot overlap; they share one grant, nobody's close ends another's read, the run seals once,
 * byte-identical to its snapshot, and no grant is left. Workers on another instance (an engine of
 * its own: its own grants) read on while this one's workers finish: endGetAccess ends every SAS
 * of a snapshot, so no worker ends the access; the sealer does, once every batch is done.
 */
import { handleBackupRequest, handleChunkMessage, requestBackup } from "../../lib/app/backups";
import type { App } from "../../lib/app/context";
import type { Engine } from "../../lib/compose";
import { addDisk } from "../../lib/disks/register";
import { decodeBackupRequest, decodeChunkMessage, QUEUES } from "../../lib/queues/messages";
import { MemoryQueues } from "../../lib/queues/sender";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";
import { expectSameSparse, sparseImage } from "../contract/sparse";
import { backupAccountUrl, seeded, serviceClient } from "../support/disks";
import { BACKUP_ACCOUNT, uniqueName } from "../support/testEnv";

let world: ManagedWorld;
let engine: Engine;

beforeAll(async () => {
  world = await startManagedWorld();
  engine = await world.engine({
    DISKDELTA_SEGMENT_BYTES: String(8 * MiB),
    DISKDELTA_FANOUT_BYTES: String(MiB),
    DISKDELTA_BATCH_CHUNKS: "2",
  });
});
afterAll(async () => world.close());

test("fanned out in one process: overlapping opens share a grant, the run seals once, byte-identical, no grant left", async () => {
  const rg = world.group();
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "big", sizeBytes: 32 * MiB });
  const rng = seeded(3);
  await world.arm.writeDisk(diskRes, 0, rng.bytes(20 * MiB));
  const id = uniqueName("f");
  const container = uniqueName("bk");
  await addDisk(engine, {
    id,
    source: diskRes,
    backupAccount: backupAccountUrl(world.proxy.url),
    backupContainer: container,
  });
  const queues = new MemoryQueues();
  const app: App = { ...engine, queues };
  for (const cycle of [0, 1]) {
    if (cycle === 1) await world.arm.writeDisk(diskRes, 2 * MiB, rng.bytes(12 * MiB));
    const run = await requestBackup(app, id, "http");
    for (const request of queues.take(QUEUES.backupRequests))
      await handleBackupRequest(app, decodeBackupRequest(request));
    const batches = queues.take(QUEUES.chunks);
    expect(batches.length).toBeGreaterThan(1);
    expect((await engine.lineage.getRun(id, run.id))!.mode).toBe("fanout");
    const grantsBefore = world.arm.count("Snapshots_GrantAccess");
    // Every batch twice, all at once.
    await Promise.all(
      batches.flatMap((b) => [0, 1].map(() => handleChunkMessage(app, decodeChunkMessage(b)))),
    );
    const sealed = (await engine.lineage.getRun(id, run.id))!;
    expect(sealed.state).toBe("succeeded");
    // One grant for all the overlapping deliveries (each would otherwise take its own).
    expect(world.arm.count("Snapshots_GrantAccess") - grantsBefore).toBe(1);
    const point = (await engine.lineage.getPoint(id, sealed.restorePoint!))!;
    const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient(container).getPageBlobClient(id);
    expectSameSparse(
      await sparseImage(backup.withSnapshot(point.backupSnapshot)),
      await sparseImage(world.arm.snapshotBlob(sealed.sourceSnapshot!)),
      `cycle ${cycle}`,
    );
    expect(await world.arm.activeGrants()).toEqual([]);
  }
});

test("fanned out over two instances: one instance's finished workers do not end another's read; the sealer ends the access", async () => {
  const other = await world.engine({
    DISKDELTA_SEGMENT_BYTES: String(8 * MiB),
    DISKDELTA_FANOUT_BYTES: String(MiB),
    DISKDELTA_BATCH_CHUNKS: "2",
    DISKDELTA_TABLE_PREFIX: engine.config.tablePrefix,
  });
  const rg = world.group();
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "wide", sizeBytes: 32 * MiB });
  await world.arm.writeDisk(diskRes, 0, seeded(4).bytes(20 * MiB));
  const id = uniqueName("g");
  const container = uniqueName("bk");
  await addDisk(engine, {
    id,
    source: diskRes,
    backupAccount: backupAccountUrl(world.proxy.url),
    backupContainer: container,
  });
  const queues = new MemoryQueues();
  const app: App = { ...engine, queues };
  const run = await requestBackup(app, id, "http");
  for (const request of queues.take(QUEUES.backupRequests))
    await handleBackupRequest(app, decodeBackupRequest(request));
  const batches = queues.take(QUEUES.chunks);
  expect(batches.length).toBeGreaterThan(2);
  const copying = (await engine.lineage.getRun(id, run.id))!;
  // A worker on the other instance is in the middle of its batch: it holds its own read.
  const disk = (await other.lineage.getDisk(id))!;
  const reading = await other.sources.of(disk).open(copying.sourceSnapshot!);
  // This instance's workers do every batch but the last, and close their reads.
  for (const b of batches.slice(0, -1)) await handleChunkMessage(app, decodeChunkMessage(b));
  expect((await engine.lineage.getRun(id, run.id))!.state).toBe("copying");
  // The other instance's read still works.
  const bytes = await other.storage.read(reading.address, { start: 0, end: MiB });
  expect(bytes.length).toBe(MiB);
  await reading.close(true);
  // The last batch (on the other instance) seals the run, and the sealer ends the access.
  await handleChunkMessage({ ...other, queues }, decodeChunkMessage(batches[batches.length - 1]));
  const sealed = (await engine.lineage.getRun(id, run.id))!;
  expect(sealed.state).toBe("succeeded");
  expect(await world.arm.activeGrants()).toEqual([]);
  const point = (await engine.lineage.getPoint(id, sealed.restorePoint!))!;
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient(container).getPageBlobClient(id);
  expectSameSparse(
    await sparseImage(backup.withSnapshot(point.backupSnapshot)),
    await sparseImage(world.arm.snapshotBlob(sealed.sourceSnapshot!)),
    "two instances",
  );
});
