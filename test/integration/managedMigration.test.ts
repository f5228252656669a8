/**
 * Migration from a page blob to the managed disk it was converted into (`disk set <id> --source
 * <managed disk id>`): the chain of restore points continues on the same backup blob; the next
 * run is a resync by compare that writes only the pages that differ (here: what the VM wrote after
 * the conversion, and the VHD footer the conversion rewrote); the page blob's last snapshot, the
 * base until then, is deleted once that run is sealed; the run after is an ordinary incremental
 * through the managed-disk diff. A move that cannot be made changes nothing.
 */
import crypto from "node:crypto";
import type { Engine } from "../../lib/compose";
import { moveToManagedDisk } from "../../lib/disks/migrate";
import { claimRun, ownerId } from "../../lib/backup/claim";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { fixedVhdFooter } from "../../lib/restore/vhd";
import { isPutPage } from "../fixtures/diffProxy";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";
import { expectSameSparse, minimalDiff, sparseImage } from "../contract/sparse";
import { backupAccountUrl, createDisk, seeded, serviceClient, snapshotsIn } from "../support/disks";
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, uniqueName } from "../support/testEnv";
import { normalize } from "../../lib/ranges";

let world: ManagedWorld;
let engine: Engine;

beforeAll(async () => {
  world = await startManagedWorld();
  engine = await world.engine();
});
afterAll(async () => world.close());

const CONTENT = 32 * MiB;

test("a page-blob disk moved to its managed disk: a resync writes only what differs, the chain continues, then incrementals", async () => {
  // A VHD page blob (an unmanaged VM disk): content plus its fixed-VHD footer.
  const blob = await createDisk(CONTENT + 512, world.proxy.url);
  const rng = seeded(77);
  await blob.client.uploadPages(rng.bytes(2 * MiB), 0, 2 * MiB);
  await blob.client.uploadPages(rng.bytes(MiB), 17 * MiB, MiB);
  await blob.client.uploadPages(fixedVhdFooter(CONTENT), CONTENT, 512);
  const id = uniqueName("mig");
  const container = uniqueName("bk");
  await addDisk(engine, {
    id,
    source: blob.url,
    backupAccount: backupAccountUrl(world.proxy.url),
    backupContainer: container,
  });
  await backupDisk(engine, id, { trigger: "cli" });
  await blob.client.uploadPages(rng.bytes(8192), 5 * MiB, 8192);
  const lastPageBlobRun = await backupDisk(engine, id, { trigger: "cli" });
  expect(lastPageBlobRun.kind).toBe("incremental");
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient(container).getPageBlobClient(id);
  const lastPoint = (await engine.lineage.getPoint(id, lastPageBlobRun.restorePoint!))!;
  const before = await sparseImage(backup.withSnapshot(lastPoint.backupSnapshot));

  // The conversion (az disk create --source <vhd>): the same content on a managed disk, whose
  // export carries a footer of its own; then the VM, started on it, writes a little.
  const rg = world.group();
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "converted", sizeBytes: CONTENT });
  for (const r of before.valid.filter((r) => r.start < CONTENT))
    await world.arm.writeDisk(
      diskRes,
      r.start,
      before.data[before.valid.indexOf(r)].subarray(0, Math.min(r.end, CONTENT) - r.start),
    );
  await world.arm.writeDisk(diskRes, 9 * MiB, crypto.randomBytes(4096));

  const moved = await moveToManagedDisk(engine, id, diskRes);
  expect(moved.disk).toMatchObject({ sourceDiskId: diskRes, sourceUrl: diskRes });
  expect(moved.from).toBe(blob.url);

  const mark = world.proxy.requests.length;
  const resync = await backupDisk(engine, id, { trigger: "cli" });
  expect(resync).toMatchObject({ state: "succeeded", kind: "resync", detection: "compare" });
  expect(resync.reason).toMatch(/PreviousSnapshotOperationNotSupported/);
  const source = await sparseImage(world.arm.snapshotBlob(resync.sourceSnapshot!));
  const written = normalize(
    world.proxy.requests
      .slice(mark)
      .filter(
        (r) => isPutPage(r) && r.headers["x-ms-page-write"] === "update" && r.path.includes(`/${container}/`),
      )
      .map((r) => {
        const m = /bytes=(\d+)-(\d+)/.exec(String(r.headers["x-ms-range"] ?? r.headers.range))!;
        return { start: Number(m[1]), end: Number(m[2]) + 1 };
      }),
  );
  const expected = minimalDiff(before, source).writes;
  expect(written).toEqual(expected);
  // What differs: the VM's 4 KiB and the footer page, nothing else.
  expect(expected).toEqual([
    { start: 9 * MiB, end: 9 * MiB + 4096 },
    { start: CONTENT, end: CONTENT + 512 },
  ]);
  const point = (await engine.lineage.getPoint(id, resync.restorePoint!))!;
  expectSameSparse(
    await sparseImage(backup.withSnapshot(point.backupSnapshot)),
    source,
    "the first managed point",
  );
  // The chain: every page-blob point is still there, the new one on top; the page blob's base is gone.
  const points = await engine.lineage.listPoints(id);
  expect(points.map((p) => p.runId)).toEqual([resync.id, lastPageBlobRun.id, points[2].runId]);
  expect(await snapshotsIn(SOURCE_ACCOUNT, blob.container)).toEqual([]);
  expect((await engine.lineage.getDisk(id))!.baseSnapshot).toBe(resync.sourceSnapshot);

  await world.arm.writeDisk(diskRes, 0, crypto.randomBytes(4096));
  const next = await backupDisk(engine, id, { trigger: "cli" });
  expect(next).toMatchObject({ kind: "incremental", detection: "service-diff", bytesCopied: 4096 });
  expect(await world.arm.activeGrants()).toEqual([]);
});

test("a conversion that changed no page still seals a point on the managed disk, so the base moves off the page blob", async () => {
  const blob = await createDisk(CONTENT + 512, world.proxy.url);
  const data = crypto.randomBytes(MiB);
  const footer = fixedVhdFooter(CONTENT);
  await blob.client.uploadPages(data, 3 * MiB, MiB);
  await blob.client.uploadPages(footer, CONTENT, 512);
  const id = uniqueName("mig");
  await addDisk(engine, { id, source: blob.url, backupAccount: backupAccountUrl(world.proxy.url) });
  await backupDisk(engine, id, { trigger: "cli" });
  const rg = world.group();
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "same", sizeBytes: CONTENT });
  await world.arm.writeDisk(diskRes, 3 * MiB, data);
  // Even the footer is the page blob's (straight to the disk's blob, as the guest cannot).
  await world.arm.diskBlob(diskRes).uploadPages(footer, CONTENT, 512);
  await moveToManagedDisk(engine, id, diskRes);
  const resync = await backupDisk(engine, id, { trigger: "cli" });
  expect(resync).toMatchObject({ state: "succeeded", kind: "resync", bytesCopied: 0, bytesCleared: 0 });
  expect((await engine.lineage.getDisk(id))!.baseSnapshot).toBe(resync.sourceSnapshot);
  expect(await snapshotsIn(SOURCE_ACCOUNT, blob.container)).toEqual([]);
  await world.arm.writeDisk(diskRes, 0, crypto.randomBytes(512));
  const next = await backupDisk(engine, id, { trigger: "cli" });
  expect(next).toMatchObject({ state: "succeeded", detection: "service-diff", bytesCopied: 512 });
});

test("a move that cannot be made changes nothing: to a page blob URL, of a managed disk, to a disk another protects, while a run is active", async () => {
  const blob = await createDisk(8 * MiB, world.proxy.url);
  const id = uniqueName("mig");
  await addDisk(engine, { id, source: blob.url, backupAccount: backupAccountUrl(world.proxy.url) });
  const rg = world.group();
  const taken = await world.arm.createDisk({ resourceGroup: rg, name: "taken", sizeBytes: 8 * MiB });
  const protector = uniqueName("p");
  await addDisk(engine, { id: protector, source: taken, backupAccount: backupAccountUrl(world.proxy.url) });
  const row = await engine.lineage.getDisk(id);

  await expect(moveToManagedDisk(engine, id, blob.url)).rejects.toThrow(/give a managed disk's resource id/);
  await expect(moveToManagedDisk(engine, protector, taken)).rejects.toThrow(/is already the managed disk/);
  await expect(moveToManagedDisk(engine, id, taken)).rejects.toThrow(
    new RegExp(`already protected by disk ${protector}`),
  );
  await expect(moveToManagedDisk(engine, id, world.arm.diskId(rg, "missing"))).rejects.toThrow(
    /was not found/,
  );
  await expect(moveToManagedDisk(engine, id, world.arm.vmId(rg, "vm1"))).rejects.toThrow(
    /is a virtual machine, not a managed disk/,
  );
  expect(await engine.lineage.getDisk(id)).toEqual(row);

  // A run holds the disk (this live process): busy, naming the run.
  const free = await world.arm.createDisk({ resourceGroup: rg, name: "free", sizeBytes: 8 * MiB });
  const claim = await claimRun(
    {
      lineage: engine.lineage,
      leaseSeconds: 60,
      owner: ownerId(),
      now: () => new Date(),
      log: () => undefined,
    },
    id,
    "cli",
  );
  await expect(moveToManagedDisk(engine, id, free)).rejects.toThrow(new RegExp(`busy: run ${claim.run.id}`));
  expect((await engine.lineage.getDisk(id))!.sourceUrl).toBe(row!.sourceUrl);
});
