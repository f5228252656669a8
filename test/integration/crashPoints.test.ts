/**
 * Crash instants that a timed SIGKILL rarely hits, reproduced by leaving storage and lineage
 * exactly as a crash there would: (1) the snapshot was taken but not yet recorded on the run;
 * (2) the run succeeded but the disk row was not yet pointed at the new base. In both, the next
 * run must finish the job without a new full copy and without leaking a snapshot.
 */
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { newRun } from "../../lib/backup/claim";
import { DISK_TAG, RUN_TAG } from "../../lib/sources/tagged";
import type { Engine } from "../../lib/compose";
import { newId } from "../../lib/lineage/ids";
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
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, uniqueName } from "../support/testEnv";

let engine: Engine;
beforeAll(async () => {
  engine = await testEngine();
});
afterAll(() => engine.close());

async function expectPoint(id: string, runId: string, disk: TestDisk) {
  const run = (await engine.lineage.getRun(id, runId))!;
  const point = (await engine.lineage.getPoint(id, run.restorePoint!))!;
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(id);
  expectSameImage(
    await readImage(backup.withSnapshot(point.backupSnapshot)),
    await readImage(disk.client.withSnapshot(run.sourceSnapshot!)),
    runId,
  );
}

async function setUp() {
  const disk = await createDisk(8 * MiB);
  const id = uniqueName("x");
  await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl() });
  const rng = seeded(8);
  await writeRandom(disk.client, 0, 8 * MiB, rng.bytes);
  const first = await backupDisk(engine, id, { trigger: "cli" });
  await writeRandom(disk.client, 2 * MiB, 3 * MiB, rng.bytes);
  return { disk, id, first };
}

test("crash after the snapshot was taken, before it was recorded: the next run adopts that snapshot", async () => {
  const { disk, id } = await setUp();
  const lockedDisk = (await engine.lineage.getDisk(id))!;
  const runId = newId(new Date(), "r");
  await engine.lineage.updateDisk({ ...lockedDisk, activeRunId: runId });
  const dead = newRun(lockedDisk, runId, "timer", {
    lineage: engine.lineage,
    leaseSeconds: 1,
    owner: "some-other-host:4242",
    now: () => new Date(Date.now() - 60_000),
    log: () => undefined,
  });
  await engine.lineage.addRun(dead);
  const orphan = await disk.client.createSnapshot({ metadata: { [DISK_TAG]: id, [RUN_TAG]: runId } });

  const run = await backupDisk(engine, id, { trigger: "cli" });
  expect(run.id).toBe(runId);
  expect(run.sourceSnapshot).toBe(orphan.snapshot);
  expect(run.kind).toBe("incremental");
  expect(run.bytesCopied).toBe(MiB);
  await expectPoint(id, run.id, disk);
  expect(await snapshotsIn(SOURCE_ACCOUNT, disk.container)).toEqual([orphan.snapshot]);
});

test("crash after the run succeeded, before the base advanced: the next run advances it and the old base is swept", async () => {
  const { disk, id, first } = await setUp();
  const before = (await engine.lineage.getDisk(id))!;
  const second = await backupDisk(engine, id, { trigger: "cli" });
  // Put the disk row back as it was before the seal's bookkeeping, still locked by the succeeded run.
  // The real seal already deleted the old base; a crash would have left it, so leave a tagged stand-in.
  const leftover = await disk.client.createSnapshot({ metadata: { [DISK_TAG]: id, [RUN_TAG]: first.id } });
  expect(leftover.snapshot).toBeDefined();
  const after = (await engine.lineage.getDisk(id))!;
  await engine.lineage.updateDisk({
    ...after,
    baseSnapshot: before.baseSnapshot,
    basePoint: before.basePoint,
    activeRunId: second.id,
  });
  expect(before.baseSnapshot).toBe(first.sourceSnapshot);

  await writeRandom(disk.client, 6 * MiB, 6 * MiB + 4096, seeded(9).bytes);
  const third = await backupDisk(engine, id, { trigger: "cli" });
  expect(third.kind).toBe("incremental");
  expect(third.baseSnapshot).toBe(second.sourceSnapshot);
  expect(third.bytesCopied).toBe(4096);
  await expectPoint(id, third.id, disk);
  expect(await snapshotsIn(SOURCE_ACCOUNT, disk.container)).toEqual([third.sourceSnapshot]);
  const finalDisk = (await engine.lineage.getDisk(id))!;
  expect(finalDisk.baseSnapshot).toBe(third.sourceSnapshot);
  expect(finalDisk.activeRunId).toBeUndefined();
});

test("a seal that fails after its backup snapshot was taken: the run fails, that snapshot is deleted, the next run seals", async () => {
  const { disk, id, first } = await setUp();
  const backupTags = async (runId: string) => {
    const found: string[] = [];
    for await (const b of serviceClient(BACKUP_ACCOUNT)
      .getContainerClient("diskdelta")
      .listBlobsFlat({ includeSnapshots: true, includeMetadata: true, prefix: id })) {
      if (b.name === id && b.snapshot && b.metadata?.[RUN_TAG] === runId) found.push(b.snapshot);
    }
    return found;
  };
  // The point row cannot be written (a permanent error): the seal has taken its snapshot by then.
  const lineage = Object.create(engine.lineage) as typeof engine.lineage;
  lineage.addPoint = () => Promise.reject(Object.assign(new Error("table says no"), { statusCode: 400 }));
  const failing = { ...engine, lineage };
  await expect(backupDisk(failing, id, { trigger: "cli" })).rejects.toThrow(/table says no/);
  const [failed] = await engine.lineage.listRuns(id, 1);
  expect(failed.state).toBe("failed");
  expect(failed.restorePoint).toBeUndefined();
  expect(await backupTags(failed.id)).toEqual([]);
  expect(await backupTags(first.id)).toHaveLength(1); // the sealed point's snapshot stays

  const next = await backupDisk(engine, id, { trigger: "cli" });
  expect(next.state).toBe("succeeded");
  expect(next.kind).toBe("incremental");
  await expectPoint(id, next.id, disk);
});
