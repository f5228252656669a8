/**
 * Crash safety of managed-disk backups with real processes: `diskdelta backup` (the compiled CLI,
 * reaching the ARM fake through DISKDELTA_ARM_ENDPOINT, NODE_EXTRA_CA_CERTS and a managed-identity
 * token endpoint, exactly as a deployment would) is SIGKILLed at four kinds of instant — right
 * after its snapshot PUT was answered, right after a beginGetAccess was answered, in the middle of
 * the copy, while sealing — each after a random extra delay, on a full run and on incrementals.
 * The next run resumes the dead one (same run, same kind), takes no second snapshot, writes only
 * what the dead run had not applied (no full copy), and seals a point equal to its snapshot; no
 * snapshot or grant is left behind (fake.resources(), fake.activeGrants()).
 */
import { spawn, type ChildProcess } from "node:child_process";
import type { Engine } from "../../lib/compose";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { normalize, subtract, totalBytes, type PageRange } from "../../lib/ranges";
import { isPutPage } from "../fixtures/diffProxy";
import { ensureBuilt } from "../support/build";
import { backupAccountUrl, seeded, serviceClient } from "../support/disks";
import { BACKUP_ACCOUNT, uniqueName } from "../support/testEnv";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";
import { expectSameSparse, minimalDiff, sparseImage, type SparseImage } from "../contract/sparse";

const SIZE = 48 * MiB;
let world: ManagedWorld;
let engine: Engine;
let env: Record<string, string>;
let cli: string;

beforeAll(async () => {
  cli = ensureBuilt();
  world = await startManagedWorld();
  // One chunk at a time and 4 MiB segments: slow enough to kill inside, a checkpoint every 4 MiB.
  env = world.env({
    DISKDELTA_TABLE_PREFIX: uniqueName("t"),
    DISKDELTA_SEGMENT_BYTES: String(4 * MiB),
    DISKDELTA_COPY_CONCURRENCY: "1",
  });
  engine = await world.engine(env);
});
afterAll(async () => world.close());

type Instant = "snapshot taken" | "access granted" | "mid-copy" | "mid-seal";

function startBackup(id: string): ChildProcess {
  return spawn(process.execPath, [cli, "backup", id, "--json"], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env, ...world.childEnv() },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** SIGKILLs the child `delayMs` after `instant` was reached; returns the dead run's id. */
async function killAt(child: ChildProcess, id: string, instant: Instant, delayMs: number): Promise<string> {
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const armMark = world.arm.requests.length;
  const answered = (op: string) =>
    world.arm.requests.slice(armMark).some((r) => r.operation === op && r.status !== undefined);
  for (let i = 0; i < 4000; i++) {
    if (child.exitCode !== null) throw new Error(`the backup finished before "${instant}": ${stderr}`);
    const disk = await engine.lineage.getDisk(id);
    const run = disk?.activeRunId ? await engine.lineage.getRun(id, disk.activeRunId) : undefined;
    const reached =
      instant === "snapshot taken"
        ? answered("Snapshots_CreateOrUpdate")
        : instant === "access granted"
          ? answered("Snapshots_GrantAccess")
          : instant === "mid-copy"
            ? run?.state === "copying" && (run.checkpoint ?? 0) >= 4 * MiB
            : run?.state === "sealing";
    if (reached && run) {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      child.kill("SIGKILL");
      await exited;
      return run.id;
    }
    await new Promise((r) => setTimeout(r, 3));
  }
  child.kill("SIGKILL");
  throw new Error(`the backup never reached "${instant}": ${stderr}`);
}

function writtenSince(mark: number, container: string): PageRange[] {
  return normalize(
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
}

test("killed right after its snapshot, its grant, mid-copy and mid-seal (random delays), every run is resumed: no second snapshot, no full copy, nothing leaked, every point equal to its snapshot", async () => {
  // A failing order and delays replay from their seed: MANAGED_KILL_SEED=<n>.
  const seed = Number(process.env.MANAGED_KILL_SEED ?? 9);
  const rng = seeded(seed);
  const rg = world.group();
  const diskRes = await world.arm.createDisk({ resourceGroup: rg, name: "os", sizeBytes: SIZE });
  const id = uniqueName("k");
  const container = uniqueName("bk");
  await addDisk(engine, {
    id,
    source: diskRes,
    backupAccount: backupAccountUrl(world.proxy.url),
    backupContainer: container,
  });
  await world.arm.writeDisk(diskRes, 0, rng.bytes(40 * MiB));
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient(container).getPageBlobClient(id);

  // Every kind of instant once, in a seeded order, each after a random 0-30 ms.
  const instants: Instant[] = ["snapshot taken", "access granted", "mid-copy", "mid-seal"];
  for (let i = instants.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [instants[i], instants[j]] = [instants[j], instants[i]];
  }
  let previous: SparseImage | undefined;
  for (const [cycle, instant] of instants.entries()) {
    if (cycle > 0) {
      // Rewrite a large region so the incremental copy lasts long enough to be killed inside.
      await world.arm.writeDisk(diskRes, rng.int(0, 8) * MiB, rng.bytes(24 * MiB));
      await world.arm.clearDisk(diskRes, 44 * MiB, rng.int(1, 8) * 4096);
    }
    const delay = process.env.MANAGED_KILL_DELAY ? Number(process.env.MANAGED_KILL_DELAY) : rng.int(0, 30);
    const killed = await killAt(startBackup(id), id, instant, delay);
    const dead = (await engine.lineage.getRun(id, killed))!;
    const puts = world.arm.count("Snapshots_CreateOrUpdate");
    const mark = world.proxy.requests.length;
    const next = await backupDisk(engine, id, { trigger: "cli" });
    const what = `seed ${seed} cycle ${cycle}, killed at "${instant}" +${delay} ms (dead run ${dead.state}, checkpoint ${dead.checkpoint ?? 0})`;
    // Killed after its seal was recorded (late in "mid-seal"): the next run settles it and finds
    // nothing changed since; otherwise the next run is the killed one, resumed.
    const sealedBeforeKill = dead.state === "succeeded";
    expect({ what, id: next.id === killed, state: next.state, kind: next.kind }).toEqual({
      what,
      id: !sealedBeforeKill,
      state: sealedBeforeKill ? "unchanged" : "succeeded",
      kind: cycle === 0 && !sealedBeforeKill ? "full" : "incremental",
    });
    const resumed = sealedBeforeKill ? (await engine.lineage.getRun(id, killed))! : next;
    // The dead run's snapshot is adopted, not taken again. A run that finds its predecessor sealed
    // takes one snapshot of its own to learn that nothing changed, and deletes it (checked below).
    if (dead.sourceSnapshot) {
      expect({ what, puts: world.arm.count("Snapshots_CreateOrUpdate") - puts }).toEqual({
        what,
        puts: sealedBeforeKill ? 1 : 0,
      });
      expect(resumed.sourceSnapshot).toBe(dead.sourceSnapshot);
    }
    const point = (await engine.lineage.getPoint(id, resumed.restorePoint!))!;
    const source = await sparseImage(world.arm.snapshotBlob(resumed.sourceSnapshot!));
    expectSameSparse(await sparseImage(backup.withSnapshot(point.backupSnapshot)), source, what);
    // No full copy: the resumed run writes at most what changed, and nothing below the dead run's checkpoint.
    const needed = cycle === 0 ? source.valid : minimalDiff(previous!, source).writes;
    const written = writtenSince(mark, container);
    expect({ what, extra: subtract(written, needed) }).toEqual({ what, extra: [] });
    if (dead.checkpoint)
      expect({
        what,
        belowCheckpoint: totalBytes(written.filter((r) => r.start < dead.checkpoint! - 4 * MiB)),
      }).toEqual({
        what,
        belowCheckpoint: 0,
      });
    // Nothing leaked: one snapshot (the new base), no open grant.
    const disk = (await engine.lineage.getDisk(id))!;
    expect({
      what,
      snapshots: (await world.arm.resources()).snapshots.filter((s) => s.includes(`/${rg}/`)),
    }).toEqual({
      what,
      snapshots: [disk.baseSnapshot],
    });
    expect({ what, grants: await world.arm.activeGrants() }).toEqual({ what, grants: [] });
    previous = source;
  }
});
