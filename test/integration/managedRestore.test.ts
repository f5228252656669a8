/**
 * Restore as a managed disk, through the real ARM client and the fake: the new disk is an upload
 * disk of the right `uploadSizeBytes` that ends up byte for byte the restore point (the point's
 * own VHD footer kept, or one written where a page blob had none), registered so that its next
 * backup is incremental — nothing changed: `unchanged`; one block written: that block only. The
 * restore rules: a disk diskdelta did not make, a registered disk's source, an attached disk are
 * never written; an earlier restore's disk only with overwrite; the leftover of an interrupted
 * restore to the same name is taken over; a failure deletes what the restore made; an upload host
 * that refuses Content-MD5 still gets the point; the HTTP restore body takes the same options.
 * (Streamed copies: see beforeAll.)
 */
import crypto from "node:crypto";
import { ComputeManagementClient } from "@azure/arm-compute";
import { startRestore } from "../../lib/app/api";
import { handleRestoreRequest } from "../../lib/app/restores";
import type { App } from "../../lib/app/context";
import type { Engine } from "../../lib/compose";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { decodeRestoreRequest, encodeMessage, QUEUES } from "../../lib/queues/messages";
import { MemoryQueues } from "../../lib/queues/sender";
import { restoreAsManagedDisk } from "../../lib/restore/managedDisk";
import { RESTORE_AS_TAG, RESTORE_ID_TAG } from "../../lib/restore/restore";
import { isFixedVhdFooter } from "../../lib/restore/vhd";
import { isPutPage } from "../fixtures/diffProxy";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";
import { expectSameSparse, sparseImage } from "../contract/sparse";
import { backupAccountUrl, createDisk, seeded, serviceClient } from "../support/disks";
import { BACKUP_ACCOUNT, uniqueName } from "../support/testEnv";

let world: ManagedWorld;
let engine: Engine;
const POLL = { updateIntervalInMs: 5 };

beforeAll(async () => {
  world = await startManagedWorld();
  // Azurite answers Put Page From URL onto a SAS with a stored access policy (an upload disk's
  // SAS) with a 500, not its usual 501 APINotImplemented, so the copy mode that would fall back
  // cannot be told from a failure here: these restores stream, as on any endpoint without it.
  engine = await world.engine({ DISKDELTA_COPY_MODE: "streamed" });
});
afterAll(async () => world.close());
afterEach(() => {
  world.arm.clearFaults();
  world.proxy.clearFaults();
});

function arm(): ComputeManagementClient {
  return new ComputeManagementClient(
    world.arm.credential,
    world.arm.subscriptionId,
    world.arm.clientOptions(),
  );
}

/** A managed disk with data, registered and backed up once. */
async function backedUp(content = 32 * MiB) {
  const rg = world.group();
  const diskRes = await world.arm.createDisk({
    resourceGroup: rg,
    name: "src",
    sizeBytes: content,
    osType: "Linux",
  });
  const rng = seeded(content);
  await world.arm.writeDisk(diskRes, 0, rng.bytes(MiB));
  await world.arm.writeDisk(diskRes, 20 * MiB, rng.bytes(3 * MiB + 4096));
  const id = uniqueName("m");
  const container = uniqueName("bk");
  await addDisk(engine, {
    id,
    source: diskRes,
    backupAccount: backupAccountUrl(world.proxy.url),
    backupContainer: container,
  });
  const run = await backupDisk(engine, id, { trigger: "cli" });
  const point = (await engine.lineage.getPoint(id, run.restorePoint!))!;
  return { rg, diskRes, id, container, point };
}

function pointBlob(container: string, blob: string, snapshot: string) {
  return serviceClient(BACKUP_ACCOUNT)
    .getContainerClient(container)
    .getPageBlobClient(blob)
    .withSnapshot(snapshot);
}

async function disksIn(rg: string): Promise<string[]> {
  return (await world.arm.resources()).disks.filter((d) => d.includes(`/resourceGroups/${rg}/`));
}

test("restored as a managed disk: the upload equals the point, the disk is registered, and its next backups are incremental", async () => {
  const b = await backedUp();
  const r = await restoreAsManagedDisk(engine, b.id, { name: `${b.id}-r` });
  expect(r.managedDiskId).toBe(
    `/subscriptions/${world.arm.subscriptionId}/resourceGroups/${b.rg}/providers/Microsoft.Compute/disks/${b.id}-r`,
  );
  expect(r).toMatchObject({
    footer: "kept",
    uploadSizeBytes: b.point.size,
    checkedBy: "digests",
    replaced: [],
  });
  expect(r.attach.join("\n")).toMatch(/az vm disk attach .*--name \/subscriptions\/.*\/disks\//);
  // The disk's bytes are the point's; the disk is an ordinary disk again (upload closed), no grant left.
  expectSameSparse(
    await sparseImage(world.arm.diskBlob(r.managedDiskId)),
    await sparseImage(pointBlob(b.container, b.id, b.point.backupSnapshot)),
    "restored disk",
  );
  const restored = await arm().disks.get(b.rg, `${b.id}-r`);
  expect(restored).toMatchObject({ diskState: "Unattached", osType: "Linux" });
  expect(restored.tags?.[RESTORE_AS_TAG]).toBe(`${b.id}-r`);
  expect(await world.arm.activeGrants()).toEqual([]);
  const record = (await engine.lineage.getDisk(r.diskId))!;
  expect(record).toMatchObject({
    sourceDiskId: r.managedDiskId,
    baseSnapshot: r.baseSnapshot,
    basePoint: r.pointId,
  });

  // Nothing changed since the restore: no copy at all.
  const mark = world.proxy.requests.length;
  const unchanged = await backupDisk(engine, r.diskId, { trigger: "cli" });
  expect(unchanged).toMatchObject({ state: "unchanged", kind: "incremental", bytesCopied: 0 });
  expect(world.proxy.requests.slice(mark).filter(isPutPage)).toEqual([]);
  // One block written on the restored disk: that block is all the next backup copies.
  await world.arm.writeDisk(r.managedDiskId, 12 * MiB, crypto.randomBytes(4096));
  const next = await backupDisk(engine, r.diskId, { trigger: "cli" });
  expect(next).toMatchObject({
    state: "succeeded",
    kind: "incremental",
    detection: "service-diff",
    bytesCopied: 4096,
  });
  const point = (await engine.lineage.getPoint(r.diskId, next.restorePoint!))!;
  expectSameSparse(
    await sparseImage(pointBlob(b.container, r.diskId, point.backupSnapshot)),
    await sparseImage(world.arm.snapshotBlob(next.sourceSnapshot!)),
    "the restored disk's first own point",
  );
});

test("a page blob's point becomes a managed disk with a VHD footer diskdelta writes (content rounded to whole windows, at least 20 MiB)", async () => {
  const blob = await createDisk(6 * MiB, world.proxy.url);
  await blob.client.uploadPages(crypto.randomBytes(MiB), MiB, MiB);
  const id = uniqueName("pb");
  await addDisk(engine, { id, source: blob.url, backupAccount: backupAccountUrl(world.proxy.url) });
  await backupDisk(engine, id, { trigger: "cli" });
  const rg = world.group();
  // A page blob has no subscription to derive the group from: a bare name is refused, an id taken.
  await expect(
    restoreAsManagedDisk(engine, id, { resourceGroup: rg, location: world.arm.location }),
  ).rejects.toThrow(/page blob, so no subscription can be derived/);
  await expect(
    restoreAsManagedDisk(engine, id, {
      resourceGroup: `/subscriptions/${world.arm.subscriptionId}/resourceGroups/${rg}`,
    }),
  ).rejects.toThrow(/location: give location/);
  const r = await restoreAsManagedDisk(engine, id, {
    name: `${id}-m`,
    resourceGroup: `/subscriptions/${world.arm.subscriptionId}/resourceGroups/${rg}`,
    location: world.arm.location,
    sku: "StandardSSD_LRS",
  });
  expect(r).toMatchObject({ footer: "written", uploadSizeBytes: 20 * MiB + 512, sku: "StandardSSD_LRS" });
  const disk = await sparseImage(world.arm.diskBlob(r.managedDiskId));
  const original = await sparseImage(blob.client);
  expect(disk.size).toBe(20 * MiB + 512);
  expect(disk.valid).toEqual([...original.valid, { start: 20 * MiB, end: 20 * MiB + 512 }]);
  expect(disk.data[0].equals(original.data[0])).toBe(true);
  expect(isFixedVhdFooter(disk.data[1], disk.size)).toBe(true);
  // The promoted backup blob is the disk as it exports, footer included: the next backup copies nothing.
  const next = await backupDisk(engine, r.diskId, { trigger: "cli" });
  expect(next).toMatchObject({ state: "unchanged", bytesCopied: 0 });
});

test("never over a disk diskdelta did not make, nor a registered disk's source; an earlier restore's disk only with overwrite; a leftover is taken over", async () => {
  const b = await backedUp();
  const before = await disksIn(b.rg);
  // A user's disk of the target name.
  await world.arm.createDisk({ resourceGroup: b.rg, name: "theirs", sizeBytes: 32 * MiB });
  await expect(restoreAsManagedDisk(engine, b.id, { name: "theirs" })).rejects.toThrow(
    /exists and was not made by a diskdelta restore/,
  );
  await expect(restoreAsManagedDisk(engine, b.id, { name: "theirs", overwrite: true })).rejects.toThrow(
    /was not made by a diskdelta restore/,
  );
  // The disk itself (its name is the registered source's).
  const other = uniqueName("o");
  const otherRes = await world.arm.createDisk({ resourceGroup: b.rg, name: other, sizeBytes: 32 * MiB });
  await addDisk(engine, { id: other, source: otherRes, backupAccount: backupAccountUrl(world.proxy.url) });
  await expect(restoreAsManagedDisk(engine, b.id, { name: other, overwrite: true })).rejects.toThrow(
    new RegExp(`is the source of registered disk ${other}`),
  );
  expect((await disksIn(b.rg)).sort()).toEqual(
    [...before, world.arm.diskId(b.rg, "theirs"), otherRes].sort(),
  );

  const name = `${b.id}-again`;
  const first = await restoreAsManagedDisk(engine, b.id, { name });
  // Run again, the same restore answers what it did; another point to that name is refused.
  expect((await restoreAsManagedDisk(engine, b.id, { name, overwrite: true })).restoreId).toBe(
    first.restoreId,
  );
  await world.arm.writeDisk(b.diskRes, 0, Buffer.alloc(4096, 5));
  await backupDisk(engine, b.id, { trigger: "cli" });
  await expect(restoreAsManagedDisk(engine, b.id, { name, overwrite: true })).rejects.toThrow(
    /already registered/,
  );

  // An earlier restore's disk that is not registered (e.g. its registration was removed by hand).
  const orphan = `${b.id}-orphan`;
  const mark = { diskdeltarestoreof: `${b.id}/${b.point.id}`, [RESTORE_AS_TAG]: "some-other-name" };
  await arm().disks.createOrUpdate(
    b.rg,
    orphan,
    {
      location: world.arm.location,
      tags: mark,
      creationData: { createOption: "Upload", uploadSizeBytes: 20 * MiB + 512 },
    },
    POLL,
  );
  await expect(restoreAsManagedDisk(engine, b.id, { name: orphan })).rejects.toThrow(
    /pass overwrite to replace it/,
  );
  const replaced = await restoreAsManagedDisk(engine, b.id, { name: orphan, overwrite: true });
  expect(replaced.replaced).toContain(replaced.managedDiskId);

  // The leftover of an interrupted restore to this very name: taken over without overwrite.
  const leftover = `${b.id}-left`;
  await arm().disks.createOrUpdate(
    b.rg,
    leftover,
    {
      location: world.arm.location,
      tags: { ...mark, [RESTORE_AS_TAG]: leftover, [RESTORE_ID_TAG]: "rs-20261201T000000000Z-abcdef" },
      creationData: { createOption: "Upload", uploadSizeBytes: 20 * MiB + 512 },
    },
    POLL,
  );
  const taken = await restoreAsManagedDisk(engine, b.id, { name: leftover });
  expect(taken.replaced).toEqual([taken.managedDiskId]);
  // It goes on as the interrupted restore, under that restore's id.
  expect(taken.restoreId).toBe("rs-20261201T000000000Z-abcdef");
  expect(first.diskId).toBe(name);
  expect(await world.arm.activeGrants()).toEqual([]);
});

test("a restore that fails half-way deletes what it made: no disk, no backup blob, no snapshot, no grant, no registration", async () => {
  const b = await backedUp();
  const name = `${b.id}-fail`;
  const disks = await disksIn(b.rg);
  const snapshots = (await world.arm.resources()).snapshots;
  // The upload cannot be closed: endGetAccess fails (after every page was written), and again
  // when diskdelta tries once more.
  world.arm.failOperations({ match: "Disks_RevokeAccess", times: 2, code: "InternalOperationError" });
  await expect(restoreAsManagedDisk(engine, b.id, { name })).rejects.toThrow(/InternalOperationError/);
  expect(await disksIn(b.rg)).toEqual(disks);
  expect((await world.arm.resources()).snapshots).toEqual(snapshots);
  expect(await world.arm.activeGrants()).toEqual([]);
  expect(await engine.lineage.getDisk(name)).toBeUndefined();
  expect(await engine.lineage.listPoints(name)).toEqual([]);
  const blob = serviceClient(BACKUP_ACCOUNT).getContainerClient(b.container).getPageBlobClient(name);
  expect(await blob.exists()).toBe(false);
  // And the same restore then succeeds.
  const r = await restoreAsManagedDisk(engine, b.id, { name });
  expect(r.diskId).toBe(name);
});

test("an upload host that refuses Content-MD5 gets every page without it, and the disk equals the point", async () => {
  const b = await backedUp();
  world.proxy.inject({
    status: 400,
    code: "UnsupportedHeader",
    match: (r) => isPutPage(r) && r.path.startsWith("/md-impexp-") && r.headers["content-md5"] !== undefined,
    times: Infinity,
  });
  const mark = world.proxy.requests.length;
  const r = await restoreAsManagedDisk(engine, b.id, { name: `${b.id}-nomd5` });
  const uploads = world.proxy.requests
    .slice(mark)
    .filter((x) => isPutPage(x) && x.path.startsWith("/md-impexp-"));
  // One refusal, then every page without the header.
  expect(uploads.filter((x) => x.headers["content-md5"] !== undefined)).toHaveLength(1);
  expect(uploads.length).toBeGreaterThan(1);
  expectSameSparse(
    await sparseImage(world.arm.diskBlob(r.managedDiskId)),
    await sparseImage(pointBlob(b.container, b.id, b.point.backupSnapshot)),
    "restored disk",
  );
});

test("HTTP: the restore body takes asManagedDisk with its placement; the queued message restores it", async () => {
  const b = await backedUp();
  const queues = new MemoryQueues();
  const app: App = { ...engine, queues };
  await expect(startRestore(app, b.id, { name: "x", sku: "Premium_LRS" })).rejects.toThrow(
    /sku: applies only with asManagedDisk/,
  );
  await expect(startRestore(app, b.id, { name: "x" })).rejects.toThrow(
    /managed disk: restore it as a managed disk \(asManagedDisk\)/,
  );
  await expect(startRestore(app, b.id, { asManagedDisk: "yes" })).rejects.toThrow(/must be a boolean/);
  const name = `${b.id}-http`;
  const answer = await startRestore(app, b.id, { asManagedDisk: true, name, sku: "Premium_LRS", zone: "2" });
  expect(answer).toMatchObject({ name, location: `/api/disks/${name}` });
  const [message] = queues.take(QUEUES.restoreRequests);
  const decoded = decodeRestoreRequest(encodeMessage(message));
  expect(decoded.asManagedDisk).toEqual({ sku: "Premium_LRS", zone: "2" });
  const outcome = await handleRestoreRequest(app, decoded);
  expect(outcome.status).toBe("restored");
  const made = await arm().disks.get(b.rg, name);
  expect(made).toMatchObject({ sku: { name: "Premium_LRS" }, zones: ["2"] });
  // A redelivered message finds its disk registered and copies nothing again.
  expect((await handleRestoreRequest(app, decoded)).status).toBe("already-restored");
});

test("a point recorded as damaged is refused unless asked for by name; nothing is made", async () => {
  const b = await backedUp();
  await engine.lineage.updatePoint({
    ...b.point,
    integrity: "failed",
    verifyResult: "failed against recorded digests",
  });
  const disks = await disksIn(b.rg);
  await expect(restoreAsManagedDisk(engine, b.id, { name: `${b.id}-bad` })).rejects.toThrow(
    /recorded as damaged/,
  );
  expect(await disksIn(b.rg)).toEqual(disks);
});
