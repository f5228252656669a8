/**
 * `verify`, `prune`, `disk set` and the --keep-* options of `disk add` as real processes
 * (`node dist/lib/cli/main.js …`) against the shared test Azurite: the policy is stored and shown
 * by `disk list`; verify exits 0 on a good point and 1 on one altered behind the engine's back,
 * naming the range; prune --dry-run deletes nothing and prune deletes what it listed; every kind
 * of bad input exits 2 with a message naming the problem and changes nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openEngine, type Engine } from "../../lib/compose";
import { silentLogger } from "../../lib/core/logger";
import { PAGE_SIZE } from "../../lib/ranges";
import { ensureBuilt, MAIN } from "../support/build";
import { json, runScript, type Result } from "../support/processes";
import { BACKUP_ACCOUNT, uniqueName } from "../support/testEnv";
import {
  backupAccountUrl,
  createDisk,
  MiB,
  serviceClient,
  snapshotsIn,
  testEngineEnv,
  writeRandom,
  type TestDisk,
} from "../support/disks";

let env: NodeJS.ProcessEnv;
let engine: Engine;
let scratch: string;

function cli(args: string[]): Promise<Result> {
  return runScript(MAIN, args, env, { cwd: scratch, home: scratch });
}

interface DiskJson {
  id: string;
  retention: { keepLast: number; keepDaily: number; keepWeekly: number; keepMonthly: number };
}

let disk: TestDisk;
let id: string;

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-maint-"));
  env = testEngineEnv({ DISKDELTA_SEGMENT_BYTES: String(4 * MiB) });
  engine = await openEngine(silentLogger, env);
  disk = await createDisk(12 * MiB);
  id = uniqueName("mcli");
  await writeRandom(disk.client, 0, 3 * MiB);
  await writeRandom(disk.client, 9 * MiB, 10 * MiB);
});
afterAll(async () => {
  await engine.close();
  fs.rmSync(scratch, { recursive: true, force: true });
});

test("disk add stores --keep-* and disk list shows the policy; bad counts exit 2 and register nothing", async () => {
  const bad = await cli([
    "disk",
    "add",
    id,
    "--source",
    disk.url,
    "--backup-account",
    backupAccountUrl(),
    "--keep-last",
    "x",
    "--keep-monthly",
    "1001",
  ]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain("--keep-last: x is not a whole number from 0 to 1000");
  expect(bad.stderr).toContain("--keep-monthly: 1001 is not a whole number from 0 to 1000");
  expect(await engine.lineage.getDisk(id)).toBeUndefined();

  const added = json<DiskJson>(
    await cli([
      "--json",
      "disk",
      "add",
      id,
      "--source",
      disk.url,
      "--backup-account",
      backupAccountUrl(),
      "--keep-last",
      "3",
      "--keep-weekly",
      "0",
    ]),
  );
  expect(added.retention).toEqual({ keepLast: 3, keepDaily: 0, keepWeekly: 0, keepMonthly: 12 });
  expect(await engine.lineage.getDisk(id)).toMatchObject({
    retainLast: 3,
    retainWeekly: 0,
    retainMonthly: 12,
  });
  const listed = json<DiskJson[]>(await cli(["--json", "disk", "list"])).find((d) => d.id === id);
  expect(listed?.retention).toEqual(added.retention);
  const human = await cli(["disk", "list"]);
  expect(human.stdout).toMatch(/KEEP L\/D\/W\/M/);
  expect(human.stdout).toMatch(/ 3\/0\/0\/12$/m);
});

test("disk set changes the policy; unknown disk, no option and bad counts exit 2 naming the problem", async () => {
  // The same disk shape as disk add and disk list print, and as the HTTP API answers.
  const set = json<DiskJson>(await cli(["--json", "disk", "set", id, "--keep-last", "2"]));
  expect(set).toMatchObject({ id, retention: { keepLast: 2, keepMonthly: 12 } });
  expect((await engine.lineage.getDisk(id))!.retainLast).toBe(2);

  const unknown = await cli(["disk", "set", "no-such-disk", "--keep-last", "1"]);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toContain("disk no-such-disk is not registered");
  const nothing = await cli(["disk", "set", id]);
  expect(nothing.code).toBe(2);
  expect(nothing.stderr).toMatch(
    /nothing to change: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly, --interval-minutes/,
  );
  const negative = await cli(["disk", "set", id, "--keep-daily=-1"]);
  expect(negative.code).toBe(2);
  expect(negative.stderr).toContain("--keep-daily: -1 is not a whole number");
  expect((await engine.lineage.getDisk(id))!.retainDaily).toBe(0);
});

test("verify: exit 0 on a good point, exit 1 naming the page on one altered behind the engine's back", async () => {
  for (let i = 0; i < 2; i++) {
    await writeRandom(disk.client, (4 + i) * MiB, (4 + i) * MiB + 8192);
    expect(json<{ state: string }>(await cli(["--json", "backup", id])).state).toBe("succeeded");
  }
  const good = json<{ ok: boolean; method: string; result: string }>(await cli(["--json", "verify", id]));
  expect(good).toMatchObject({ ok: true, method: "source-snapshot" });
  const human = await cli(["verify", id]);
  expect(human.code).toBe(0);
  expect(human.stdout).toMatch(/result\s+ok/);

  // A snapshot of the backup blob with one byte changed, the newest point's row pointed at it.
  const [point] = await engine.lineage.listPoints(id);
  const blob = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(id);
  const offset = 9 * MiB + 5 * PAGE_SIZE;
  const before = await blob.downloadToBuffer(offset, PAGE_SIZE);
  const changed = Buffer.from(before);
  changed[3] ^= 0x55;
  await blob.uploadPages(changed, offset, PAGE_SIZE);
  const tampered = (await blob.createSnapshot()).snapshot!;
  await blob.uploadPages(before, offset, PAGE_SIZE);
  await engine.lineage.updatePoint({ ...point, backupSnapshot: tampered });
  try {
    const bad = await cli(["verify", id, "--point", point.id]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/result\s+FAILED/);
    expect(bad.stdout).toContain(`first difference  [${offset}, ${offset + PAGE_SIZE})`);
    expect(bad.stderr).toContain(
      `failed against source snapshot ${point.sourceSnapshot}: page [${offset}, ${offset + PAGE_SIZE})`,
    );
    expect((await engine.lineage.getPoint(id, point.id))!.verifyResult).toMatch(
      /^failed against source snapshot/,
    );
  } finally {
    const row = (await engine.lineage.getPoint(id, point.id))!;
    await engine.lineage.updatePoint({ ...row, backupSnapshot: point.backupSnapshot });
    await blob.withSnapshot(tampered).delete();
  }
});

test("verify: unknown disk, unknown point and a malformed --point exit 2 naming the problem", async () => {
  const unknownDisk = await cli(["verify", "no-such-disk"]);
  expect(unknownDisk.code).toBe(2);
  expect(unknownDisk.stderr).toContain("disk no-such-disk is not registered");
  const unknownPoint = await cli(["verify", id, "--point", "p-20200101T000000000Z-abcdef"]);
  expect(unknownPoint.code).toBe(2);
  expect(unknownPoint.stderr).toContain(
    `restore point p-20200101T000000000Z-abcdef of disk ${id} does not exist`,
  );
  const malformed = await cli(["verify", id, "--point", "yesterday"]);
  expect(malformed.code).toBe(2);
  expect(malformed.stderr).toContain(`--point: "yesterday" is neither a restore point id`);
});

test("prune --dry-run lists what would go and why and deletes nothing; prune deletes it; unknown disk exits 2", async () => {
  await cli(["disk", "set", id, "--keep-last", "5"]);
  // Nothing changed since the last backup: no new point unless asked for one.
  const unchanged = json<{ state: string; restorePoint?: string }>(await cli(["--json", "backup", id]));
  expect(unchanged).toMatchObject({ state: "unchanged" });
  expect(unchanged.restorePoint).toBeUndefined();
  expect(await engine.lineage.listPoints(id)).toHaveLength(2);
  expect((await cli(["backup", id, "--force"])).code).toBe(0);
  const points = await engine.lineage.listPoints(id);
  expect(points).toHaveLength(3);
  await cli([
    "disk",
    "set",
    id,
    "--keep-last",
    "1",
    "--keep-daily",
    "0",
    "--keep-weekly",
    "0",
    "--keep-monthly",
    "0",
  ]);

  interface PruneJson {
    dryRun: boolean;
    keep: Array<{ id: string; reasons: string[] }>;
    delete: Array<{ id: string; reasons: string[] }>;
    deleted: string[];
  }
  const dry = json<PruneJson>(await cli(["--json", "prune", id, "--dry-run"]));
  expect(dry.dryRun).toBe(true);
  expect(dry.keep.map((k) => k.id)).toEqual([points[0].id]);
  expect(dry.delete.map((d) => d.id)).toEqual([points[1].id, points[2].id]);
  expect(dry.delete[0].reasons[0]).toMatch(/^outside the policy/);
  expect(dry.deleted).toEqual([]);
  const human = await cli(["prune", id, "--dry-run"]);
  expect(human.stdout).toContain(`would delete  ${points[1].id}`);
  expect(await engine.lineage.listPoints(id)).toHaveLength(3);
  expect(await snapshotsIn(BACKUP_ACCOUNT, "diskdelta", id)).toHaveLength(3);

  const real = json<PruneJson>(await cli(["--json", "prune", id]));
  expect(real.deleted.sort()).toEqual([points[1].id, points[2].id].sort());
  expect((await engine.lineage.listPoints(id)).map((p) => p.id)).toEqual([points[0].id]);
  expect(await snapshotsIn(BACKUP_ACCOUNT, "diskdelta", id)).toEqual([points[0].backupSnapshot]);

  const unknown = await cli(["prune", "no-such-disk", "--dry-run"]);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toContain("disk no-such-disk is not registered");
});
