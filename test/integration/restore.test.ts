/**
 * Restore on the shared Azurite: after several backup cycles every restore point restored as a
 * new disk equals the source snapshot it was made from; the restored disk backs up incrementally
 * from its base; point selection by id, latest and time; restore to a sparse file that resumes;
 * bad input names the problem and leaves nothing behind.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { InputError, NotFoundError } from "../../lib/core/errors";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/compose";
import type { RestorePointRecord } from "../../lib/lineage";
import { pointTime } from "../../lib/lineage";
import { selectPoint } from "../../lib/restore/points";
import {
  defaultRestoreName,
  restoreAsNewDisk,
  RESTORE_AS_TAG,
  RESTORE_OF_TAG,
} from "../../lib/restore/restore";
import { restoreToFile } from "../../lib/restore/toFile";
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";
import { ensureBuilt } from "../support/build";
import { json, runScript } from "../support/processes";
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
  type Image,
  type TestDisk,
  snapshotsIn,
} from "../support/disks";
import { randomCycle } from "../support/cycles";

let engine: Engine;
let disk: TestDisk;
let diskId: string;
/** Oldest first. */
let points: RestorePointRecord[];
/** Each point's source snapshot as read right after its run (the engine deletes it a run later). */
const sourceImages = new Map<string, Image>();

beforeAll(async () => {
  engine = await testEngine({ env: { DISKDELTA_SEGMENT_BYTES: String(4 * MiB) } });
  disk = await createDisk(16 * MiB);
  diskId = uniqueName("rst");
  await addDisk(engine, { id: diskId, source: disk.url, backupAccount: backupAccountUrl() });
  const rng = seeded(4242);
  // Sparse: a few MiB of data in a 16 MiB disk, so a restored file has real holes.
  await writeRandom(disk.client, 0, 1 * MiB, rng.bytes);
  await writeRandom(disk.client, 9 * MiB, 10 * MiB, rng.bytes);
  for (let cycle = 0; cycle < 4; cycle++) {
    if (cycle > 0) await randomCycle(disk.client, rng, cycle);
    const run = await backupDisk(engine, diskId, { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    sourceImages.set(run.restorePoint!, await readImage(disk.client.withSnapshot(run.sourceSnapshot!)));
  }
  points = (await engine.lineage.listPoints(diskId)).reverse();
  expect(points).toHaveLength(4);
});
afterAll(() => engine.close());

function expectSameBytes(actual: Buffer, expected: Buffer, what: string): void {
  if (actual.equals(expected)) return;
  let at = 0;
  while (at < actual.length && actual[at] === expected[at]) at++;
  throw new Error(`${what}: ${actual.length} vs ${expected.length} bytes, first difference at ${at}`);
}

/** A restore point's own bytes (its backup snapshot). */
function pointImage(p: RestorePointRecord) {
  return readImage(
    serviceClient(BACKUP_ACCOUNT)
      .getContainerClient("diskdelta")
      .getPageBlobClient(diskId)
      .withSnapshot(p.backupSnapshot),
  );
}

test("point selection: by id, latest, time, and a time before the first point is an error naming it", async () => {
  for (const p of points) expect((await selectPoint(engine.lineage, diskId, p.id)).id).toBe(p.id);
  expect((await selectPoint(engine.lineage, diskId, "latest")).id).toBe(points[points.length - 1].id);
  for (const [i, p] of points.entries()) {
    const exact = new Date(pointTime(p)).toISOString();
    expect((await selectPoint(engine.lineage, diskId, exact)).id).toBe(p.id);
    // Just before a point's capture time picks the one before it.
    const before = new Date(pointTime(p) - 1).toISOString();
    if (i > 0) expect((await selectPoint(engine.lineage, diskId, before)).id).toBe(points[i - 1].id);
  }
  const early = new Date(pointTime(points[0]) - 1).toISOString();
  await expect(selectPoint(engine.lineage, diskId, early)).rejects.toThrow(NotFoundError);
  await expect(selectPoint(engine.lineage, diskId, early)).rejects.toThrow(
    new RegExp(`first one \\(${points[0].id}\\) is from ${new Date(pointTime(points[0])).toISOString()}`),
  );
  await expect(selectPoint(engine.lineage, diskId, "p-20200101T000000000Z-abcdef")).rejects.toThrow(
    /does not exist/,
  );
  await expect(selectPoint(engine.lineage, diskId, "yesterday")).rejects.toThrow(InputError);
});

test("every restore point restored as a new disk equals its source snapshot, and so do the new disk's base and backup blob", async () => {
  for (const [i, p] of points.entries()) {
    const name = `${diskId}-n${i}`;
    const r = await restoreAsNewDisk(engine, diskId, { point: p.id, name });
    expect(r.diskId).toBe(name);
    const expected = sourceImages.get(p.id)!;
    expect(expected).toBeDefined();
    const src = serviceClient(SOURCE_ACCOUNT)
      .getContainerClient(disk.container)
      .getPageBlobClient(`${name}.vhd`);
    expect(r.diskUrl).toBe(src.url);
    expectSameImage(await readImage(src), expected, `restored disk of point ${i}`);
    expectSameImage(await readImage(src.withSnapshot(r.baseSnapshot)), expected, `base of point ${i}`);
    const bak = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(name);
    expect(r.backupBlobUrl).toBe(bak.url);
    expectSameImage(await readImage(bak), expected, `promoted backup blob of point ${i}`);
    const registered = await engine.lineage.getDisk(name);
    expect(registered).toMatchObject({
      sourceUrl: r.diskUrl,
      baseSnapshot: r.baseSnapshot,
      baseSize: 16 * MiB,
      backupBlob: name,
      backupContainer: "diskdelta",
    });
    const runs = await engine.lineage.listRuns(name);
    expect(runs.map((x) => x.trigger)).toEqual(["restore"]);
  }
});

test("the restored disk's first backup is incremental and copies exactly what was written after the restore", async () => {
  const name = `${diskId}-inc`;
  const r = await restoreAsNewDisk(engine, diskId, { point: "latest", name });
  const restored = serviceClient(SOURCE_ACCOUNT)
    .getContainerClient(disk.container)
    .getPageBlobClient(`${name}.vhd`);
  const rng = seeded(7);
  await writeRandom(restored, 2 * MiB, 2 * MiB + 64 * 1024, rng.bytes);
  await writeRandom(restored, 12 * MiB + 512, 12 * MiB + 4096, rng.bytes);
  const run = await backupDisk(engine, name, { trigger: "cli" });
  expect(run.state).toBe("succeeded");
  expect(run.kind).toBe("incremental");
  expect(run.baseSnapshot).toBe(r.baseSnapshot);
  expect(run.bytesCopied).toBe(64 * 1024 + 4096 - 512);
  expect(run.bytesCleared).toBe(0);
  const point = await engine.lineage.getPoint(name, run.restorePoint!);
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(name);
  expectSameImage(
    await readImage(backup.withSnapshot(point!.backupSnapshot)),
    await readImage(restored.withSnapshot(run.sourceSnapshot!)),
    "restored disk's first restore point",
  );
  // The engine's sweep kept only the new base of the restored disk.
  const snaps = await snapshotsIn(SOURCE_ACCOUNT, disk.container, `${name}.vhd`);
  expect(snaps).toEqual([run.sourceSnapshot]);
  // Writing to the restored disk and its backup blob left the original restore point untouched.
  const latest = points[points.length - 1];
  expectSameImage(await pointImage(latest), sourceImages.get(latest.id)!, "original restore point");
});

test("the default name is <disk>-restored-<point time>; existing blobs are replaced only when diskdelta made them, never a registered disk's", async () => {
  const p = points[1];
  const name = defaultRestoreName(diskId, p);
  expect(name).toMatch(new RegExp(`^${diskId}-restored-\\d{8}t\\d{6}z$`));
  const first = await restoreAsNewDisk(engine, diskId, { point: p.id });
  expect(first.diskId).toBe(name);
  const sourceBlob = (blob: string) =>
    serviceClient(SOURCE_ACCOUNT).getContainerClient(disk.container).getPageBlobClient(blob);
  const backupBlob = (blob: string) =>
    serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(blob);

  // A blob someone else made where the restore would write: refused with or without --overwrite, untouched.
  const foreign = `${diskId}-foreign`;
  await sourceBlob(`${foreign}.vhd`).create(512);
  for (const overwrite of [false, true]) {
    await expect(restoreAsNewDisk(engine, diskId, { point: p.id, name: foreign, overwrite })).rejects.toThrow(
      /exists and was not made by a diskdelta restore; choose another name \(it is never replaced\)/,
    );
  }
  expect((await sourceBlob(`${foreign}.vhd`).getProperties()).contentLength).toBe(512);
  expect(await backupBlob(foreign).exists()).toBe(false);
  expect(await engine.lineage.getDisk(foreign)).toBeUndefined();

  // The leftover of an interrupted restore to the same name (marked, unregistered) is taken over.
  const leftover = `${diskId}-leftover`;
  await sourceBlob(`${leftover}.vhd`).create(1024, {
    metadata: { [RESTORE_AS_TAG]: leftover, [RESTORE_OF_TAG]: `${diskId}/${p.id}` },
  });
  const taken = await restoreAsNewDisk(engine, diskId, { point: p.id, name: leftover });
  expect(taken.replaced).toEqual([sourceBlob(`${leftover}.vhd`).url]);
  expectSameImage(await readImage(sourceBlob(`${leftover}.vhd`)), await pointImage(p), "leftover taken over");

  // Another restore's target (marked for another name): only with --overwrite, and the result says so.
  const other = `${diskId}-other`;
  await sourceBlob(`${other}.vhd`).create(512, { metadata: { [RESTORE_AS_TAG]: "someone-else" } });
  await expect(restoreAsNewDisk(engine, diskId, { point: p.id, name: other })).rejects.toThrow(
    /exists \(an earlier diskdelta restore\); choose another name or pass overwrite to replace it/,
  );
  const over = await restoreAsNewDisk(engine, diskId, { point: p.id, name: other, overwrite: true });
  expect(over.replaced).toEqual([sourceBlob(`${other}.vhd`).url]);
  expectSameImage(await readImage(sourceBlob(`${other}.vhd`)), await pointImage(p), "overwritten restore");

  // A registered name is refused even with --overwrite: it would hijack another disk's lineage.
  await expect(restoreAsNewDisk(engine, diskId, { point: p.id, overwrite: true })).rejects.toThrow(
    /already registered/,
  );
});

test("unknown disk, unknown point and a bad name are input errors", async () => {
  await expect(restoreAsNewDisk(engine, "nosuchdisk", { point: "latest" })).rejects.toThrow(/not registered/);
  await expect(
    restoreAsNewDisk(engine, diskId, { point: "p-20200101T000000000Z-abcdef", name: `${diskId}-x` }),
  ).rejects.toThrow(NotFoundError);
  await expect(restoreAsNewDisk(engine, diskId, { point: "latest", name: "Bad_Name" })).rejects.toThrow(
    /^name: disk id "Bad_Name" is not valid/,
  );
  expect(await engine.lineage.getDisk(`${diskId}-x`)).toBeUndefined();
});

describe("restore to file", () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-restore-"));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("the file equals the restore point, has the disk's size, and its holes are holes", async () => {
    const p = points[points.length - 1];
    const file = path.join(dir, "latest.img");
    const r = await restoreToFile(engine, diskId, { point: "latest", path: file });
    expect(r.pointId).toBe(p.id);
    const image = sourceImages.get(p.id)!;
    const bytes = fs.readFileSync(file);
    expect(bytes.length).toBe(image.size);
    expectSameBytes(bytes, image.bytes, "restored file");
    const st = fs.statSync(file);
    expect(st.size).toBe(16 * MiB);
    // Only valid ranges were written: allocation stays near the valid bytes, well below the size.
    const valid = image.valid.reduce((n, x) => n + x.end - x.start, 0);
    expect(valid).toBeLessThan(12 * MiB);
    expect(st.blocks * 512).toBeLessThan(valid + 2 * MiB);
    expect(fs.existsSync(`${file}.diskdelta-partial`)).toBe(false);
  });

  test("a restore cut short resumes from its progress file instead of starting over", async () => {
    const p = points[0];
    const file = path.join(dir, "resumed.img");
    const abort = new AbortController();
    await expect(
      restoreToFile(engine, diskId, {
        point: p.id,
        path: file,
        signal: abort.signal,
        onProgress: (done) => {
          // After the first window with data (the point has data in windows 0 and 2).
          if (done >= 4 * MiB) abort.abort();
        },
      }),
    ).rejects.toThrow(/interrupted/);
    const sidecar = JSON.parse(fs.readFileSync(`${file}.diskdelta-partial`, "utf8"));
    expect(sidecar).toMatchObject({ pointId: p.id, size: 16 * MiB });
    expect(sidecar.offset).toBeGreaterThanOrEqual(4 * MiB);
    expect(sidecar.offset).toBeLessThan(16 * MiB);
    const r = await restoreToFile(engine, diskId, { point: p.id, path: file });
    expect(r.resumedFrom).toBe(sidecar.offset);
    expect(fs.readFileSync(file).equals(sourceImages.get(p.id)!.bytes)).toBe(true);
    expect(fs.existsSync(`${file}.diskdelta-partial`)).toBe(false);
  });

  test("an existing file needs --overwrite, '-' and unwritable paths are refused", async () => {
    const file = path.join(dir, "exists.img");
    fs.writeFileSync(file, "keep me");
    await expect(restoreToFile(engine, diskId, { point: "latest", path: file })).rejects.toThrow(
      /already exists/,
    );
    expect(fs.readFileSync(file, "utf8")).toBe("keep me");
    await expect(restoreToFile(engine, diskId, { point: "latest", path: "-" })).rejects.toThrow(InputError);
    await expect(
      restoreToFile(engine, diskId, { point: "latest", path: path.join(dir, "no", "such", "dir.img") }),
    ).rejects.toThrow(InputError);
    expect(fs.existsSync(path.join(dir, "no"))).toBe(false);
    const r = await restoreToFile(engine, diskId, { point: "latest", path: file, overwrite: true });
    expect(fs.statSync(file).size).toBe(r.size);
  });
});

describe("restore command", () => {
  /** The real CLI as a process, on this suite's storage and lineage tables. */
  function cli(args: string[]) {
    const t = testStorage();
    return runScript(ensureBuilt(), args, {
      AzureWebJobsStorage: t.webJobsStorage,
      STORAGE_ACCOUNT_KEYS: t.storageAccountKeys,
      DISKDELTA_TABLE_PREFIX: engine.config.tablePrefix,
      DISKDELTA_SEGMENT_BYTES: String(4 * MiB),
    });
  }

  test("--json prints the new disk under diskId; human output says how to attach it; bad input exits 2", async () => {
    const name = `${diskId}-cli`;
    const restored = json<Record<string, unknown>>(
      await cli(["--json", "restore", diskId, "--point", "latest", "--name", name]),
    );
    expect(restored).toMatchObject({
      diskId: name,
      fromDiskId: diskId,
      fromPoint: points[points.length - 1].id,
    });
    expect(await engine.lineage.getDisk(name)).toBeDefined();
    const human = await cli(["restore", diskId, "--point", points[0].id, "--name", `${name}2`]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/az disk create .* --source http/);
    expect(human.stdout).toMatch(/az vm disk attach/);
    const unknown = await cli(["restore", "nosuchdisk"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/disk nosuchdisk is not registered/);
    const stdout = await cli(["restore", diskId, "--to-file", "-"]);
    expect(stdout.code).toBe(2);
    expect(stdout.stderr).toMatch(/--to-file: needs a file path/);
  });
});
