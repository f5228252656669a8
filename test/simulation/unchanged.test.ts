/**
 * "Unchanged" after a seal that wrote nothing: a forced backup of an unchanged disk, and a resync
 * (its base deleted behind diskdelta's back) that finds the backup already equal, both seal a
 * point without writing a byte. The point's fence must still be known, so the next run that finds
 * nothing changed ends `unchanged` instead of sealing one more identical point every time.
 */
import { backupDisk } from "../../lib/backup/run";
import { addDisk } from "../../lib/disks/register";
import type { BlobAddress } from "../../lib/storage/port";
import { MiB, pattern, World } from "./world";

const DISK = "quiet";

async function start(): Promise<{ world: World; src: BlobAddress }> {
  const world = new World();
  const src: BlobAddress = { kind: "blob", location: world.blob("source", "vhds", "quiet.vhd") };
  await world.store.ensureContainer(src.location);
  await world.store.create(src, 16 * MiB);
  await world.store.write(src, 2 * MiB, pattern(7, MiB));
  await addDisk(world.process(), {
    id: DISK,
    source: src.location.url,
    backupAccount: "https://simbackup.blob.core.windows.net",
  });
  const first = await backupDisk(world.process(), DISK, { trigger: "cli" });
  expect(first.state).toBe("succeeded");
  return { world, src };
}

test("after a forced backup that wrote nothing, the next unchanged run ends unchanged", async () => {
  const { world } = await start();
  const forced = await backupDisk(world.process(), DISK, { trigger: "cli", force: true });
  expect(forced.state).toBe("succeeded");
  expect(forced.bytesCopied + forced.bytesCleared).toBe(0);
  const disk = (await world.lineage.getDisk(DISK))!;
  expect(disk.basePoint).toBe(forced.restorePoint);
  expect(disk.baseFence).toBeDefined();
  const next = await backupDisk(world.process(), DISK, { trigger: "cli" });
  expect(next.state).toBe("unchanged");
  expect((await world.lineage.listPoints(DISK)).length).toBe(2);
});

test("after a resync that found the backup already equal, the next unchanged run ends unchanged", async () => {
  const { world, src } = await start();
  const base = (await world.lineage.getDisk(DISK))!.baseSnapshot!;
  await world.store.delete({ ...src, snapshot: base });
  const resync = await backupDisk(world.process(), DISK, { trigger: "cli" });
  expect(resync.state).toBe("succeeded");
  expect(resync.kind).toBe("resync");
  expect(resync.reason).toMatch(/^the diff from the base was refused: \w+/);
  expect(resync.bytesCopied + resync.bytesCleared).toBe(0);
  const next = await backupDisk(world.process(), DISK, { trigger: "cli" });
  expect(next.state).toBe("unchanged");
});
