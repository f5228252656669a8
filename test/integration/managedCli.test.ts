/**
 * The managed-disk commands as real processes (`node dist/lib/cli/main.js …`): the compiled CLI
 * reaches the ARM fake as a deployment reaches ARM — DISKDELTA_ARM_ENDPOINT, the fake's CA through
 * NODE_EXTRA_CA_CERTS, a token from a managed-identity endpoint (IDENTITY_ENDPOINT), no test hook
 * in the code. `disk add --vm` prints the ids it registered; backup, `restore --as-managed-disk`
 * (printing how to attach the disk) and `disk set --source` work; bad input exits 2 with the
 * problem in the CLI's words; and no SAS (or any part of one) ever reaches stdout or stderr, even
 * with -v.
 *
 * The first test is also the managed-disk walkthrough for someone without an Azure account:
 * `DISKDELTA_DEMO=1 npx jest test/integration/managedCli.test.ts -t walkthrough` prints each
 * command and what it answered (README, "Managed disks without an account").
 */
import type { Engine } from "../../lib/compose";
import { addDisk } from "../../lib/disks/register";
import { ensureBuilt, MAIN } from "../support/build";
import { json, runScript, type Result } from "../support/processes";
import { backupAccountUrl, createDisk } from "../support/disks";
import { uniqueName } from "../support/testEnv";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";

let world: ManagedWorld;
let env: Record<string, string>;
let engine: Engine;

beforeAll(async () => {
  ensureBuilt();
  world = await startManagedWorld();
  env = world.env({ DISKDELTA_TABLE_PREFIX: uniqueName("t"), DISKDELTA_COPY_MODE: "streamed" });
  engine = await world.engine(env);
});
afterAll(async () => world.close());

/** A SAS, or the managed-disk host and stored-policy parts of one. */
const SAS = /[?&](sig|si|sv|se)=|md-impexp-|\/md-[a-z0-9]{12}\//;

const DEMO = process.env.DISKDELTA_DEMO === "1";

function say(text: string): void {
  if (DEMO) process.stdout.write(`${text}\n`);
}

async function cli(args: string[]): Promise<Result> {
  const result = await runScript(MAIN, args, { ...env, ...world.childEnv() });
  expect({ args, sas: SAS.test(result.stdout) || SAS.test(result.stderr) }).toEqual({ args, sas: false });
  say(
    `\n$ diskdelta ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(" ")}\n${result.stdout}${result.stderr}`,
  );
  return result;
}

test("the walkthrough: disk add --vm, backups, restore --as-managed-disk and disk set --source from the command line; no SAS in any output", async () => {
  say("\n== diskdelta and managed disks, on a local fake of Azure Resource Manager ==");
  say("A VM 'app1' with an OS disk and a data disk on LUN 1; the guest has written 2 MiB to the data disk.");
  const rg = world.group();
  const os = await world.arm.createDisk({
    resourceGroup: rg,
    name: "app1-os",
    sizeBytes: 32 * MiB,
    osType: "Linux",
  });
  const data = await world.arm.createDisk({ resourceGroup: rg, name: "app1-data", sizeBytes: 32 * MiB });
  const vm = world.arm.createVm({
    resourceGroup: rg,
    name: "app1",
    osDisk: os,
    dataDisks: [{ lun: 1, diskId: data }],
  });
  await world.arm.writeDisk(data, 0, Buffer.alloc(2 * MiB, 7));
  const prefix = uniqueName("v");
  const backupAccount = backupAccountUrl(world.proxy.url);

  const human = await cli([
    "disk",
    "add",
    prefix,
    "--vm",
    vm,
    "--backup-account",
    backupAccount,
    "--keep-last",
    "5",
  ]);
  expect(human.code).toBe(0);
  expect(human.stdout).toContain(`registered 2 disks of virtual machine ${vm}`);
  expect(human.stdout).toMatch(new RegExp(`${prefix}-os\\s+OS: app1-os`));
  expect(human.stdout).toMatch(new RegExp(`${prefix}-lun1\\s+LUN 1: app1-data`));

  const backup = json<{ state: string; kind: string; bytesCopied: number }>(
    await cli(["backup", `${prefix}-lun1`, "--json", "-v"]),
  );
  expect(backup).toMatchObject({ state: "succeeded", kind: "full", bytesCopied: 2 * MiB + 512 });
  say("\nThe first backup copied only the valid ranges: the 2 MiB written and the 512-byte VHD footer.");
  say(
    "The guest writes 64 KiB; the next backup asks the service for the diff between two incremental snapshots.",
  );
  await world.arm.writeDisk(data, 8 * MiB, Buffer.alloc(64 * 1024, 8));
  const incremental = json<{ kind: string; detection: string; bytesCopied: number }>(
    await cli(["backup", `${prefix}-lun1`, "--json"]),
  );
  expect(incremental).toMatchObject({
    kind: "incremental",
    detection: "service-diff",
    bytesCopied: 64 * 1024,
  });
  expect((await cli(["points", `${prefix}-lun1`])).code).toBe(0);

  const name = `${prefix}-back`;
  const restored = await cli([
    "restore",
    `${prefix}-lun1`,
    "--as-managed-disk",
    "--name",
    name,
    "--sku",
    "Premium_LRS",
    "-v",
  ]);
  expect(restored.code).toBe(0);
  expect(restored.stdout).toContain(`managedDisk   ${world.arm.diskId(rg, name)}`);
  expect(restored.stdout).toContain(
    `az vm disk attach --resource-group <vm's resource group> --vm-name <vm> --name ${world.arm.diskId(rg, name)}`,
  );
  expect(restored.stdout).toContain(`diskdelta backup ${name}`);
  say(
    "\nThe restored disk is registered with its own first incremental snapshot as its base: its next backup copies nothing.",
  );
  const after = json<{ state: string }>(await cli(["backup", name, "--json"]));
  expect(after.state).toBe("unchanged");
  say(
    "\nA disk registered as a page blob (an unmanaged VHD) moves to the managed disk it was converted into:",
  );

  // A page-blob disk moved to its managed disk.
  const blob = await createDisk(32 * MiB + 512, world.proxy.url);
  const old = uniqueName("pb");
  await addDisk(engine, { id: old, source: blob.url, backupAccount });
  const target = await world.arm.createDisk({ resourceGroup: rg, name: "converted", sizeBytes: 32 * MiB });
  const moved = json<{ source: string; sourceKind: string; movedFrom: string }>(
    await cli(["disk", "set", old, "--source", target, "--json"]),
  );
  expect(moved).toMatchObject({ source: target, sourceKind: "managed-disk", movedFrom: blob.url });
});

test("bad input exits 2 and says what is wrong in the CLI's words; nothing is registered", async () => {
  const rg = world.group();
  const disk = await world.arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: 32 * MiB });
  const vm = world.arm.createVm({ resourceGroup: rg, name: "vm", osDisk: disk });
  const backupAccount = backupAccountUrl(world.proxy.url);
  const before = await engine.lineage.listDisks();
  const cases: Array<[string[], RegExp]> = [
    [
      ["disk", "add", "x1", "--source", vm, "--backup-account", backupAccount],
      /--source: .* is a virtual machine, not a managed disk: give one of its disks, or register them all with --vm/,
    ],
    [
      ["disk", "add", "--vm", disk, "--backup-account", backupAccount],
      /--vm: .* is a managed disk, not a virtual machine: register one managed disk with --source/,
    ],
    [
      ["disk", "add", "x2", "--vm", vm, "--source", disk, "--backup-account", backupAccount],
      /--source and --vm cannot be combined/,
    ],
    [
      ["disk", "add", "x3", "--vm", vm, "--backup-blob", "b", "--backup-account", backupAccount],
      /--backup-blob: cannot be given with --vm/,
    ],
    [
      [
        "disk",
        "add",
        "x4",
        "--source",
        `/subscriptions/${world.arm.subscriptionId}/resourceGroups/${rg}/providers/Microsoft.Compute/disks/nope`,
        "--backup-account",
        backupAccount,
      ],
      /--source: managed disk .*nope: it was not found/,
    ],
    [["disk", "set", "nosuchdisk", "--source", disk], /disk nosuchdisk is not registered/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(args);
    expect({ args, code: r.code }).toEqual({ args, code: 2 });
    expect(r.stderr).toMatch(message);
  }
  expect(await engine.lineage.listDisks()).toEqual(before);

  const id = uniqueName("m");
  await addDisk(engine, { id, source: disk, backupAccount });
  const restoreCases: Array<[string[], RegExp]> = [
    [["restore", id, "--sku", "Premium_LRS"], /--sku: applies only to a restore --as-managed-disk/],
    [["restore", id], /disk .* is a managed disk: restore it as a managed disk \(--as-managed-disk\)/],
    [
      ["restore", id, "--as-managed-disk", "--to-file", "/tmp/x.img"],
      /--as-managed-disk and --to-file cannot be combined/,
    ],
  ];
  for (const [args, message] of restoreCases) {
    const r = await cli(args);
    expect({ args, code: r.code }).toEqual({ args, code: 2 });
    expect(r.stderr).toMatch(message);
  }
});
