/**
 * Backup cycles on plain Azurite (compare path: Azurite answers diffs wrongly, so the engine must
 * detect it and compare). After every cycle the new restore point must equal its source snapshot
 * byte for byte, valid ranges included.
 */
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/compose";
import { SOURCE_ACCOUNT, BACKUP_ACCOUNT } from "../support/testEnv";
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
  snapshotsIn,
} from "../support/disks";
import { randomCycle } from "../support/cycles";

let engine: Engine;
beforeAll(async () => {
  engine = await testEngine({ env: { DISKDELTA_SEGMENT_BYTES: String(8 * MiB) } });
});
afterAll(() => engine.close());

test("12 cycles of random writes, clears, a grow and a shrink: every restore point equals its source snapshot (compare path)", async () => {
  const disk = await createDisk(16 * MiB);
  await addDisk(engine, { id: "cyc", source: disk.url, backupAccount: backupAccountUrl() });
  const rng = seeded(20261125);
  const backup = serviceClient(BACKUP_ACCOUNT);
  await writeRandom(disk.client, 0, 3 * MiB, rng.bytes);
  for (let cycle = 0; cycle < 12; cycle++) {
    if (cycle > 0) await randomCycle(disk.client, rng, cycle);
    const run = await backupDisk(engine, "cyc", { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    expect(run.kind).toBe(cycle === 0 ? "full" : "incremental");
    expect(run.detection).toBe(cycle === 0 ? "valid-ranges" : "compare");
    const point = await engine.lineage.getPoint("cyc", run.restorePoint!);
    expect(point).toBeDefined();
    const restored = await readImage(
      backup.getContainerClient("diskdelta").getPageBlobClient("cyc").withSnapshot(point!.backupSnapshot),
    );
    const source = await readImage(disk.client.withSnapshot(run.sourceSnapshot!));
    expectSameImage(restored, source, `cycle ${cycle}`);
  }
  // Only the base is kept of the disk's own snapshots.
  const snaps = await snapshotsIn(SOURCE_ACCOUNT, disk.container);
  const d = await engine.lineage.getDisk("cyc");
  expect(snaps).toEqual([d!.baseSnapshot]);
  expect(await engine.lineage.listPoints("cyc")).toHaveLength(12);
});
