/**
 * Registering managed disks and VMs, and every way of getting it wrong, through the real ARM
 * client and the fake: malformed resource ids, a VM where a disk is expected (and the reverse), a
 * disk in a deleted resource group, and each missing built-in role named by its id — each a clear
 * message on its field, and nothing registered or made. The least-privilege roles the README
 * lists are enough for what it says they are for: Disk Backup Reader and Disk Snapshot
 * Contributor for a backup cycle; restoring as a managed disk needs a custom role on top (no
 * built-in disk role has disks/endGetAccess/action), and without it the message says so.
 */
import type { Engine } from "../../lib/compose";
import { registerDisk } from "../../lib/app/api";
import type { App } from "../../lib/app/context";
import { addDisk } from "../../lib/disks/register";
import { addVmDisks } from "../../lib/disks/vm";
import { backupDisk } from "../../lib/backup/run";
import { MemoryQueues } from "../../lib/queues/sender";
import { restoreAsManagedDisk } from "../../lib/restore/managedDisk";
import { CUSTOM_ROLE_ACTIONS } from "../../lib/sources/armErrors";
import { BUILT_IN_ROLES } from "../fixtures/armFake";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";
import { backupAccountUrl } from "../support/disks";
import { uniqueName } from "../support/testEnv";

let world: ManagedWorld;
let engine: Engine;

beforeAll(async () => {
  world = await startManagedWorld();
  engine = await world.engine({ DISKDELTA_COPY_MODE: "streamed" });
});
afterAll(async () => world.close());
afterEach(() => world.arm.resetAuthorization());

const backupAccount = () => backupAccountUrl(world.proxy.url);

/** Runs `attempt`, expects an InputError whose message matches, and that nothing was registered or made. */
async function refused(attempt: () => Promise<unknown>, message: RegExp): Promise<void> {
  const disks = await engine.lineage.listDisks();
  const resources = await world.arm.resources();
  const err = (await attempt().then(
    () => undefined,
    (e: unknown) => e,
  )) as Error | undefined;
  expect(err?.name).toBe("InputError");
  expect(err?.message).toMatch(message);
  expect(await engine.lineage.listDisks()).toEqual(disks);
  expect(await world.arm.resources()).toEqual(resources);
}

test("malformed ids, the wrong kind of resource, a missing disk or group: clear messages, nothing registered", async () => {
  const rg = world.group();
  const sub = world.arm.subscriptionId;
  const add = (source: string) => () =>
    addDisk(engine, { id: uniqueName("b"), source, backupAccount: backupAccount() });
  await refused(
    add("/subscriptions/nope"),
    /source: "\/subscriptions\/nope" is not a managed disk resource id: it is not of the form \/subscriptions\/<subscription id>\/resourceGroups/,
  );
  await refused(
    add(`/subscriptions/not-a-guid/resourceGroups/${rg}/providers/Microsoft.Compute/disks/d`),
    /its subscription "not-a-guid" is not a subscription id \(a GUID\)/,
  );
  await refused(
    add(`/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.Storage/storageAccounts/acct`),
    /it is a Microsoft.Storage\/storageAccounts resource/,
  );
  await refused(
    add(`/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.Compute/disks/bad name`),
    /its name "bad name" is not a valid disks name/,
  );
  await refused(
    add(world.arm.vmId(rg, "vm1")),
    /is a virtual machine, not a managed disk: give one of its disks, or register them all with vm/,
  );
  await refused(
    add(world.arm.snapshotId(rg, "s1")),
    /is a snapshot, not a managed disk: give the id of the disk it was taken of/,
  );
  await refused(
    add(world.arm.diskId(rg, "missing")),
    /managed disk .*\/disks\/missing: it was not found \(ResourceNotFound\)/,
  );
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: 8 * MiB });
  await refused(
    () => addVmDisks(engine, { vm: diskRes, backupAccount: backupAccount() }),
    /vm: .* is a managed disk, not a virtual machine: register one managed disk with source/,
  );
  await refused(
    () => addVmDisks(engine, { vm: world.arm.vmId(rg, "nothere"), backupAccount: backupAccount() }),
    /virtual machine .*: it was not found/,
  );
  // A disk whose resource group was deleted.
  const gone = world.group();
  const goneDisk = await world.arm.createDisk({ resourceGroup: gone, name: "d", sizeBytes: 8 * MiB });
  await world.arm.deleteResourceGroup(gone);
  await refused(
    add(goneDisk),
    /its resource group does not exist \(Resource group '.*' could not be found\.\)/,
  );
  // The same checks on HTTP, worded as body fields.
  const app: App = { ...engine, queues: new MemoryQueues() };
  await refused(
    () =>
      registerDisk(app, {
        id: uniqueName("h"),
        source: world.arm.vmId(rg, "vm1"),
        backupAccount: backupAccount(),
      }),
    /source: .* is a virtual machine/,
  );
});

test("each missing role is named by its built-in role and id, and nothing is registered", async () => {
  const rg = world.group();
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: 8 * MiB });
  const add = () => addDisk(engine, { id: uniqueName("r"), source: diskRes, backupAccount: backupAccount() });
  world.arm.assignRole(BUILT_IN_ROLES.diskSnapshotContributor, rg);
  await refused(
    add,
    /may not Microsoft.Compute\/disks\/read .*grant it the built-in role "Disk Backup Reader" \(3e5e47e6-65f7-47ef-90b5-e5dd4d455f24\) on \/subscriptions\/.*\/resourceGroups\//,
  );
  world.arm.resetAuthorization();
  world.arm.assignRole(BUILT_IN_ROLES.diskBackupReader, rg);
  await refused(
    add,
    /snapshots of managed disk .*may not Microsoft.Compute\/snapshots\/read.*"Disk Snapshot Contributor" \(7efff54f-a5b4-42b5-a1c5-5411624893ce\)/,
  );
});

test("Disk Backup Reader and Disk Snapshot Contributor are enough for a backup cycle; restoring as a managed disk needs the custom role, and says so", async () => {
  const rg = world.group();
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: 32 * MiB });
  await world.arm.writeDisk(diskRes, 0, Buffer.alloc(MiB, 1));
  world.arm.assignRole(BUILT_IN_ROLES.diskBackupReader, rg);
  world.arm.assignRole(BUILT_IN_ROLES.diskSnapshotContributor, rg);
  const id = uniqueName("least");
  await addDisk(engine, { id, source: diskRes, backupAccount: backupAccount() });
  expect((await backupDisk(engine, id, { trigger: "cli" })).state).toBe("succeeded");
  await world.arm.writeDisk(diskRes, 4 * MiB, Buffer.alloc(4096, 2));
  expect(await backupDisk(engine, id, { trigger: "cli" })).toMatchObject({
    state: "succeeded",
    kind: "incremental",
  });

  // Restore with the three built-in roles: the upload cannot be closed (no endGetAccess on disks).
  world.arm.assignRole(BUILT_IN_ROLES.diskRestoreOperator, rg);
  const err = (await restoreAsManagedDisk(engine, id, { name: `${id}-r` }).catch((e: unknown) => e)) as Error;
  expect(err.message).toMatch(
    /may not Microsoft.Compute\/disks\/endGetAccess\/action .*no built-in disk role has Microsoft.Compute\/disks\/endGetAccess\/action: grant a custom role with Microsoft.Compute\/disks\/read, Microsoft.Compute\/disks\/write, Microsoft.Compute\/disks\/delete, Microsoft.Compute\/disks\/beginGetAccess\/action, Microsoft.Compute\/disks\/endGetAccess\/action/,
  );
  expect(await engine.lineage.getDisk(`${id}-r`)).toBeUndefined();
  // With the custom role the README describes, the same restore (taking over its leftover) succeeds.
  world.arm.assignRole(
    {
      id: "00000000-0000-0000-0000-0000000d15c0",
      roleName: "diskdelta restore",
      actions: CUSTOM_ROLE_ACTIONS,
      notActions: [],
    },
    rg,
  );
  const r = await restoreAsManagedDisk(engine, id, { name: `${id}-r` });
  expect(r.diskId).toBe(`${id}-r`);
  expect(await world.arm.activeGrants()).toEqual([]);
});

test("a VM's disks: OS and data, ids from the VM and LUN, canonical ids though the VM names the group in capitals", async () => {
  const rg = world.group("RG-Mixed-");
  const os = await world.arm.createDisk({
    resourceGroup: rg,
    name: "web1_OsDisk_1",
    sizeBytes: 8 * MiB,
    osType: "Linux",
  });
  const d0 = await world.arm.createDisk({ resourceGroup: rg, name: "web1-data0", sizeBytes: 8 * MiB });
  const d3 = await world.arm.createDisk({ resourceGroup: rg, name: "web1-data3", sizeBytes: 8 * MiB });
  const vm = world.arm.createVm({
    resourceGroup: rg,
    name: "Web1.Prod",
    osDisk: os,
    dataDisks: [
      { lun: 0, diskId: d0 },
      { lun: 3, diskId: d3 },
    ],
  });
  const r = await addVmDisks(engine, { vm, backupAccount: backupAccount(), retention: { keepLast: 3 } });
  expect(r.disks.map((d) => [d.id, d.role, d.lun, d.record.sourceDiskId])).toEqual([
    ["web1-prod-os", "os", undefined, os],
    ["web1-prod-lun0", "data", 0, d0],
    ["web1-prod-lun3", "data", 3, d3],
  ]);
  expect(r.disks.every((d) => d.record.retainLast === 3)).toBe(true);
  // Attached disks back up: a snapshot needs no access to the disk itself.
  await world.arm.writeDisk(d3, 0, Buffer.alloc(4096, 9));
  expect(await backupDisk(engine, "web1-prod-lun3", { trigger: "cli" })).toMatchObject({
    state: "succeeded",
    bytesCopied: 4096 + 512,
  });

  // Again: every id is taken, and nothing more is registered.
  await refused(
    () => addVmDisks(engine, { vm, backupAccount: backupAccount() }),
    /disk web1-prod-os is already registered/,
  );
  // With a prefix: one disk is already protected, so none of the three is registered.
  await refused(
    () => addVmDisks(engine, { vm, prefix: "web1b", backupAccount: backupAccount() }),
    /is already protected by disk web1-prod-os/,
  );
});
