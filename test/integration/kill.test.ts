/**
 * Crash safety with a real process: `diskdelta backup` is SIGKILLed mid-copy; the next run takes
 * the dead run over (its holder's pid is gone on this host), resumes from its checkpoint and
 * seals a byte-identical restore point. Nothing is copied twice beyond the segment in flight, no
 * restore point changes, and no snapshot leaks.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/compose";
import { normalize, type PageRange } from "../../lib/ranges";
import { isPutPage, startDiffProxy, type DiffProxy } from "../fixtures/diffProxy";
import { ensureBuilt } from "../support/build";
import {
  backupAccountUrl,
  createDisk,
  expectSameImage,
  MiB,
  readImage,
  seeded,
  serviceClient,
  testEngine,
  testEngineEnv,
  writeRandom,
  type Image,
  snapshotsIn,
} from "../support/disks";
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

const SEGMENT = 4 * MiB;
let proxy: DiffProxy;
let engine: Engine;
let env: NodeJS.ProcessEnv;
let cli: string;

beforeAll(async () => {
  cli = ensureBuilt();
  const s = testStorage();
  proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  // One chunk at a time and 4 MiB segments: the copy is slow enough to kill in the middle, and a checkpoint lands every 4 MiB.
  env = testEngineEnv({ DISKDELTA_SEGMENT_BYTES: String(SEGMENT), DISKDELTA_COPY_CONCURRENCY: "1" });
  engine = await testEngine({ env: Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])) });
});
afterAll(async () => {
  await engine.close();
  await proxy.close();
});

function startBackup(id: string): ChildProcess {
  return spawn(process.execPath, [cli, "backup", id, "--json"], {
    env: { ...process.env, ...env },
    stdio: "pipe",
  });
}

/** Waits until the disk's active run has applied at least `bytes` (its checkpoint), then SIGKILLs the child. */
async function killWhenPast(child: ChildProcess, id: string, bytes: number): Promise<string> {
  let stderr = "";
  child.stderr?.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  for (let i = 0; i < 600; i++) {
    const disk = await engine.lineage.getDisk(id);
    const run = disk?.activeRunId ? await engine.lineage.getRun(id, disk.activeRunId) : undefined;
    if (run && (run.checkpoint ?? 0) >= bytes) {
      child.kill("SIGKILL");
      await exited;
      return run.id;
    }
    if (child.exitCode !== null) throw new Error(`the backup finished before it could be killed: ${stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill("SIGKILL");
  throw new Error(`the run never reached ${bytes} bytes: ${stderr}`);
}

/** The ranges written to the backup blob since `mark`, merged: a write repeated (the dead child's last request, or a retry) counts once. */
function writtenSince(mark: number, container: string): PageRange[] {
  const ranges: PageRange[] = proxy.requests
    .slice(mark)
    .filter((r) => isPutPage(r) && r.headers["x-ms-page-write"] === "update" && r.path.includes(container))
    .map((r) => {
      const m = /bytes=(\d+)-(\d+)/.exec(String(r.headers["x-ms-range"]))!;
      return { start: Number(m[1]), end: Number(m[2]) + 1 };
    });
  return normalize(ranges);
}

test("a backup killed mid-copy (full, then incremental) is resumed by the next run: identical restore points, no second full copy, no leaked snapshots", async () => {
  const size = 40 * MiB;
  const disk = await createDisk(size, proxy.url);
  const id = uniqueName("k");
  const backupContainer = uniqueName("bk");
  await addDisk(engine, {
    id,
    source: disk.url,
    backupAccount: backupAccountUrl(proxy.url),
    backupContainer,
  });
  const rng = seeded(42);
  await writeRandom(disk.client, 0, size, rng.bytes);

  // Kill the full copy after 12 MiB are applied.
  const killedFull = await killWhenPast(startBackup(id), id, 12 * MiB);
  let checkpoint = (await engine.lineage.getRun(id, killedFull))!.checkpoint!;
  expect(checkpoint).toBeGreaterThanOrEqual(12 * MiB);
  let mark = proxy.requests.length;
  const resumedFull = await backupDisk(engine, id, { trigger: "cli" });
  expect(resumedFull.id).toBe(killedFull);
  expect(resumedFull.kind).toBe("full");
  expect(resumedFull.state).toBe("succeeded");
  // The resumed run writes exactly what lies above the dead run's checkpoint: no second full copy.
  expect(writtenSince(mark, backupContainer)).toEqual([{ start: checkpoint, end: size }]);
  const backupBlob = serviceClient(BACKUP_ACCOUNT).getContainerClient(backupContainer).getPageBlobClient(id);
  const points: { snapshot: string; image: Image }[] = [];
  const check = async (runId: string, what: string) => {
    const run = (await engine.lineage.getRun(id, runId))!;
    const point = (await engine.lineage.getPoint(id, run.restorePoint!))!;
    const image = await readImage(backupBlob.withSnapshot(point.backupSnapshot));
    expectSameImage(image, await readImage(disk.client.withSnapshot(run.sourceSnapshot!)), what);
    points.push({ snapshot: point.backupSnapshot, image });
  };
  await check(resumedFull.id, "resumed full");

  // Rewrite half the disk and kill the incremental copy after 8 MiB.
  await writeRandom(disk.client, 8 * MiB, 28 * MiB, rng.bytes);
  await disk.client.clearPages(32 * MiB, 4 * MiB);
  const killedIncremental = await killWhenPast(startBackup(id), id, 16 * MiB);
  checkpoint = (await engine.lineage.getRun(id, killedIncremental))!.checkpoint!;
  mark = proxy.requests.length;
  const resumedIncremental = await backupDisk(engine, id, { trigger: "cli" });
  expect(resumedIncremental.id).toBe(killedIncremental);
  expect(resumedIncremental.kind).toBe("incremental");
  // Of the rewritten [8 MiB, 28 MiB), only the part above the checkpoint is written again.
  expect(writtenSince(mark, backupContainer)).toEqual(
    checkpoint >= 28 * MiB ? [] : [{ start: Math.max(checkpoint, 8 * MiB), end: 28 * MiB }],
  );
  await check(resumedIncremental.id, "resumed incremental");

  // One more ordinary cycle; every earlier restore point is untouched.
  await writeRandom(disk.client, 0, MiB, rng.bytes);
  const next = await backupDisk(engine, id, { trigger: "cli" });
  expect(next.kind).toBe("incremental");
  await check(next.id, "after the kills");
  for (const p of points)
    expectSameImage(
      await readImage(backupBlob.withSnapshot(p.snapshot)),
      p.image,
      `restore point ${p.snapshot}`,
    );

  expect(await snapshotsIn(SOURCE_ACCOUNT, disk.container)).toEqual([next.sourceSnapshot]);
  expect((await snapshotsIn(BACKUP_ACCOUNT, backupContainer)).sort()).toEqual(
    (await engine.lineage.listPoints(id)).map((p) => p.backupSnapshot).sort(),
  );
  const disk2 = await engine.lineage.getDisk(id);
  expect(disk2!.activeRunId).toBeUndefined();
});

test("two backups of one disk at once: one runs, the other is told the disk is busy and which run holds it", async () => {
  const disk = await createDisk(16 * MiB);
  const id = uniqueName("c");
  await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl() });
  await writeRandom(disk.client, 0, 16 * MiB, seeded(1).bytes);
  const results = await Promise.allSettled([
    backupDisk(engine, id, { trigger: "cli" }),
    backupDisk(engine, id, { trigger: "timer" }),
  ]);
  const ok = results.filter((r) => r.status === "fulfilled");
  const busy = results.filter((r) => r.status === "rejected");
  expect(ok).toHaveLength(1);
  expect(busy).toHaveLength(1);
  const runId = (ok[0] as PromiseFulfilledResult<{ id: string }>).value.id;
  const reason = (busy[0] as PromiseRejectedResult).reason as Error;
  expect(reason.name).toBe("BusyError");
  expect(reason.message).toContain(runId);
  expect(await engine.lineage.listRuns(id)).toHaveLength(1);
});
