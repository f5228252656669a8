/**
 * Every crash point, not a few (issue 10): for a first, an incremental, a resync and a fanned-out
 * run, the simulation counts the storage and lineage operations N of the run, then for every k in
 * 1..N crashes the run after operation k (the operation took effect, its caller never hears, every
 * later operation of that process fails) and resumes it as the next invocation would; and,
 * separately, fails operation k with a transient error. After each, the invariants of DESIGN.md
 * must hold: the restore point equals its source byte for byte; nothing skipped; no second full
 * copy (the resumed process writes at most what the run had to write); no leaked snapshot; the
 * base never deleted before the next seal; one seal; the counts of the sealed run equal those of
 * a run never interrupted. A failure names the scenario, k and the operation, so it replays.
 */
import { backupDisk } from "../../lib/backup/run";
import { handleBackupRequest, handleChunkMessage, requestBackup } from "../../lib/app/backups";
import type { App } from "../../lib/app/context";
import { CrashError, FaultPlan, transientError } from "../../lib/core/faults";
import { addDisk, setDisk } from "../../lib/disks/register";
import { applyRetention } from "../../lib/retention/apply";
import { restoreAsNewDisk } from "../../lib/restore/restore";
import { backupLocation, sourceBlobLocation } from "../../lib/lineage/locations";
import type { RunRecord } from "../../lib/lineage/types";
import { decodeBackupRequest, decodeChunkMessage, QUEUES } from "../../lib/queues/messages";
import type { BlobAddress } from "../../lib/storage/port";
import { countingWrites as counting, image, MiB, pattern, sameImage, World } from "./world";

const DISK = "simdisk";
const RESTORE_ID = "rs-20261201T000000000Z-5e1f00";
const SIZE = 24 * MiB;

/** Writes and clears of the source disk, deterministic, through the raw store (the "VM"). */
async function vm(world: World, ops: Array<["w" | "c", number, number]>, seed: number): Promise<number> {
  const a: BlobAddress = { kind: "blob", location: world.blob("source", "vhds", "disk.vhd") };
  let written = 0;
  for (const [op, start, length] of ops) {
    if (op === "w") {
      for (let at = start; at < start + length; at += 4 * MiB) {
        const n = Math.min(4 * MiB, start + length - at);
        await world.store.write(a, at, pattern(seed + at, n));
      }
      written += length;
    } else await world.store.clear(a, { start, end: start + length });
  }
  return written;
}

interface Scenario {
  name: string;
  env?: Record<string, string>;
  /** Brings a fresh world to the scenario's start (no faults). */
  setup(world: World): Promise<void>;
  /** The work under test, in one process. */
  act(app: App, world: World): Promise<unknown>;
  /** What the next invocation does after a crash or a failure. */
  resume(app: App, world: World): Promise<unknown>;
  /** An upper bound of what the resumed process may write to the backup blob (no second full copy). */
  mayRewrite: number;
  /** Restore points after the scenario. */
  points: number;
  /** How the reference run must have gone: fanned out to batches, or copied inline. */
  mode?: "fanout";
  /** Checks of its own instead of a backup's (restore, prune); returns the problem. */
  check?(world: World): Promise<string | undefined>;
}

async function register(world: World): Promise<void> {
  const app = world.process();
  const src: BlobAddress = { kind: "blob", location: world.blob("source", "vhds", "disk.vhd") };
  await world.store.ensureContainer(src.location);
  await world.store.create(src, SIZE);
  await vm(
    world,
    [
      ["w", 0, MiB + 8192],
      ["w", 9 * MiB + 512, 512 * 1024],
      ["w", 17 * MiB, MiB + 4096],
    ],
    1,
  );
  await addDisk(app, {
    id: DISK,
    source: src.location.url,
    backupAccount: "https://simbackup.blob.core.windows.net",
    retention: { keepLast: 5 },
  });
}

async function firstBackup(world: World): Promise<void> {
  const run = await backupDisk(world.process(), DISK, { trigger: "cli" });
  if (run.state !== "succeeded") throw new Error(`setup backup ended ${run.state}`);
}

const INCREMENTAL_CHANGES: Array<["w" | "c", number, number]> = [
  ["w", 64 * 1024, 64 * 1024],
  ["c", 512 * 1024, 128 * 1024],
  ["w", 10 * MiB, 256 * 1024],
  ["w", 12 * MiB - 4096, 8192],
  ["c", 17 * MiB + 4096, 8192],
  ["w", 23 * MiB, 512],
];
/** What INCREMENTAL_CHANGES writes. */
const CHANGED = 64 * 1024 + 256 * 1024 + 8192 + 512;

/** A queue driver: delivers the app's messages one at a time; a crashed delivery goes back to the front. */
async function drain(app: App, world: World): Promise<void> {
  for (;;) {
    const request = world.queues.sent.get(QUEUES.backupRequests)?.[0];
    const chunk = world.queues.sent.get(QUEUES.chunks)?.[0];
    const queue = request ? QUEUES.backupRequests : chunk ? QUEUES.chunks : undefined;
    if (!queue) return;
    const message = world.queues.sent.get(queue)!.shift()!;
    try {
      if (queue === QUEUES.backupRequests) await handleBackupRequest(app, decodeBackupRequest(message));
      else await handleChunkMessage(app, decodeChunkMessage(message));
    } catch (err) {
      world.queues.sent.get(queue)!.unshift(message); // not acknowledged: it comes back
      throw err;
    }
  }
}

const RESTORED = "restored";

/** Three points, each of another state of the disk. */
async function threePoints(world: World): Promise<void> {
  await register(world);
  await firstBackup(world);
  for (const seed of [5, 6]) {
    await vm(world, INCREMENTAL_CHANGES, seed);
    const run = await backupDisk(world.process(), DISK, { trigger: "cli" });
    if (run.state !== "succeeded") throw new Error(`setup backup ended ${run.state}`);
  }
}

/** The restored disk is registered whole, equal to the point, and nothing else of it is left anywhere. */
async function checkRestore(world: World): Promise<string | undefined> {
  const original = (await world.lineage.getDisk(DISK))!;
  const [newest] = await world.lineage.listPoints(DISK);
  const want = await image(world.store, {
    kind: "blob",
    location: backupLocation(original),
    snapshot: newest.backupSnapshot,
  });
  const disk = await world.lineage.getDisk(RESTORED);
  if (!disk) return "the restored disk is not registered";
  const source = sourceBlobLocation(disk)!;
  const backup = backupLocation(disk);
  for (const [what, a] of [
    ["the restored disk", { kind: "blob", location: source }],
    ["its base", { kind: "blob", location: source, snapshot: disk.baseSnapshot }],
    ["its backup blob", { kind: "blob", location: backup }],
  ] as const) {
    const problem = sameImage(await image(world.store, a as BlobAddress), want);
    if (problem) return `${what} differs from the point: ${problem}`;
  }
  const points = await world.lineage.listPoints(RESTORED);
  if (points.length !== 1 || points[0].id !== disk.basePoint)
    return `the restored disk has points ${points.map((p) => p.id).join(", ")}, base ${disk.basePoint}`;
  const promoted = await image(world.store, {
    kind: "blob",
    location: backup,
    snapshot: points[0].backupSnapshot,
  });
  if (sameImage(promoted, want)) return "its restore point differs from the point it was restored from";
  const runs = await world.lineage.listRuns(RESTORED);
  if (runs.length !== 1 || runs[0].trigger !== "restore")
    return `the restored disk has runs ${runs.map((r) => r.id).join(", ")}`;
  // Nothing else of the restore anywhere: its two blobs with one snapshot each, and its digests.
  const key = (l: { serviceUrl: string; container: string; blob: string }) =>
    `${l.serviceUrl}/${l.container}/${l.blob}`;
  const expected = [
    key(source),
    key(backup),
    key({ ...backup, blob: `${RESTORED}.digests/${points[0].id}` }),
  ].sort();
  const mine = world.store.inventory().filter((b) => b.url.includes(`/${RESTORED}`));
  if (JSON.stringify(mine.map((b) => b.url).sort()) !== JSON.stringify(expected))
    return `blobs of the restore: ${mine.map((b) => b.url).join(", ")}`;
  for (const b of mine.filter((b) => !b.url.includes(".digests/"))) {
    if (b.snapshots.length !== 1) return `${b.url} has ${b.snapshots.length} snapshots`;
  }
  const originalPoint = await image(world.store, {
    kind: "blob",
    location: backupLocation(original),
    snapshot: newest.backupSnapshot,
  });
  if (sameImage(originalPoint, want)) return "the restore changed the point it read";
  return undefined;
}

/** Retention kept the newest point only, and every deleted point lost snapshot, digests and row together. */
async function checkPrune(world: World): Promise<string | undefined> {
  const disk = (await world.lineage.getDisk(DISK))!;
  const points = await world.lineage.listPoints(DISK);
  if (points.length !== 1 || points[0].id !== disk.basePoint)
    return `points left: ${points.map((p) => p.id).join(", ")}`;
  const backup = backupLocation(disk);
  const snaps = (await world.store.listSnapshots(backup)).map((x) => x.snapshot);
  if (JSON.stringify(snaps) !== JSON.stringify([points[0].backupSnapshot]))
    return `backup snapshots left: ${snaps.join(", ")}`;
  const digests = world.store.inventory().filter((b) => b.url.includes(".digests/"));
  if (digests.length !== 1 || !digests[0].url.endsWith(points[0].id))
    return `digests left: ${digests.map((d) => d.url).join(", ")}`;
  return undefined;
}

const SCENARIOS: Scenario[] = [
  {
    name: "first backup",
    setup: register,
    act: (app) => backupDisk(app, DISK, { trigger: "cli" }),
    resume: (app) => backupDisk(app, DISK, { trigger: "cli" }),
    mayRewrite: MiB + 8192 + 512 * 1024 + MiB + 4096,
    points: 1,
  },
  {
    name: "incremental backup",
    setup: async (world) => {
      await register(world);
      await firstBackup(world);
      await vm(world, INCREMENTAL_CHANGES, 2);
    },
    act: (app) => backupDisk(app, DISK, { trigger: "cli" }),
    resume: (app) => backupDisk(app, DISK, { trigger: "cli" }),
    mayRewrite: CHANGED,
    points: 2,
  },
  {
    name: "resync (the base is gone, the service refuses the diff)",
    setup: async (world) => {
      await register(world);
      await firstBackup(world);
      await vm(world, INCREMENTAL_CHANGES, 3);
      const disk = (await world.lineage.getDisk(DISK))!;
      await world.store.delete({
        kind: "blob",
        location: sourceBlobLocation(disk)!,
        snapshot: disk.baseSnapshot,
      });
    },
    act: (app) => backupDisk(app, DISK, { trigger: "cli" }),
    resume: (app) => backupDisk(app, DISK, { trigger: "cli" }),
    mayRewrite: CHANGED,
    points: 2,
  },
  {
    name: "fanned-out incremental backup",
    env: { DISKDELTA_FANOUT_BYTES: String(64 * 1024), DISKDELTA_BATCH_CHUNKS: "1" },
    mode: "fanout",
    setup: async (world) => {
      await register(world);
      await firstBackup(world);
      await vm(world, INCREMENTAL_CHANGES, 4);
      await requestBackup(world.process(), DISK, "timer");
    },
    act: (app, world) => drain(app, world),
    resume: (app, world) => drain(app, world),
    mayRewrite: CHANGED,
    points: 2,
  },
  {
    name: "restore as a new disk",
    setup: threePoints,
    // As the restore queue runs it: a redelivery carries the request's restore id.
    act: (app) => restoreAsNewDisk(app, DISK, { name: RESTORED, restoreId: RESTORE_ID }),
    resume: (app) => restoreAsNewDisk(app, DISK, { name: RESTORED, restoreId: RESTORE_ID }),
    mayRewrite: 0,
    points: 3,
    check: checkRestore,
  },
  {
    name: "prune",
    setup: async (world) => {
      await threePoints(world);
      await setDisk(world.process(), DISK, { retention: { keepLast: 1, keepWeekly: 0, keepMonthly: 0 } });
    },
    act: (app) => applyRetention(app, DISK),
    resume: (app) => applyRetention(app, DISK),
    mayRewrite: 0,
    points: 1,
    check: checkPrune,
  },
];

function counts(r: RunRecord) {
  return { kind: r.kind, bytesCopied: r.bytesCopied, bytesCleared: r.bytesCleared };
}

/** Every invariant, after the scenario ended (with or without a crash and a resume). */
async function check(
  world: World,
  s: Scenario,
  reference: ReturnType<typeof counts> | undefined,
): Promise<string | undefined> {
  const disk = (await world.lineage.getDisk(DISK))!;
  if (disk.activeRunId) return `the disk is still held by run ${disk.activeRunId}`;
  const points = await world.lineage.listPoints(DISK);
  if (points.length !== s.points)
    return `${points.length} restore points, expected ${s.points} (one seal per run)`;
  const newest = points[0];
  const source = sourceBlobLocation(disk)!;
  const backup = backupLocation(disk);
  if (newest.sourceSnapshot !== disk.baseSnapshot)
    return `the newest point ${newest.id} is not of the base ${disk.baseSnapshot}`;
  const live = await image(world.store, { kind: "blob", location: source });
  const base = await image(world.store, { kind: "blob", location: source, snapshot: disk.baseSnapshot });
  const sealed = await image(world.store, {
    kind: "blob",
    location: backup,
    snapshot: newest.backupSnapshot,
  });
  const problem = sameImage(sealed, live) ?? sameImage(base, live);
  if (problem) return `the restore point differs from its source: ${problem}`;
  const sourceSnaps = (await world.store.listSnapshots(source)).map((x) => x.snapshot);
  if (JSON.stringify(sourceSnaps) !== JSON.stringify([disk.baseSnapshot]))
    return `source snapshots leaked: ${sourceSnaps.join(", ")} (base ${disk.baseSnapshot})`;
  const backupSnaps = (await world.store.listSnapshots(backup)).map((x) => x.snapshot).sort();
  const recorded = points.map((p) => p.backupSnapshot).sort();
  if (JSON.stringify(backupSnaps) !== JSON.stringify(recorded))
    return `backup snapshots ${backupSnaps.join(", ")} but points name ${recorded.join(", ")}`;
  const run = (await world.lineage.getRun(DISK, newest.runId))!;
  if (reference && JSON.stringify(counts(run)) !== JSON.stringify(reference)) {
    return `the sealed run counts ${JSON.stringify(counts(run))}, a run never interrupted ${JSON.stringify(reference)}`;
  }
  return undefined;
}

interface Tally {
  tried: number;
  failures: string[];
}

async function explore(s: Scenario, mode: "crash" | "fail"): Promise<{ n: number; tally: Tally }> {
  // The start, set up once; every replay begins from a copy of it.
  const start = new World(s.env);
  await s.setup(start);
  // The reference: the scenario without faults, its operations counted.
  const ref = start.clone();
  const counter = new FaultPlan();
  await s.act(ref.process(counter), ref);
  const refRun = s.check
    ? undefined
    : await ref.lineage.getRun(DISK, (await ref.lineage.listPoints(DISK))[0].runId);
  const reference = refRun && counts(refRun);
  if (s.mode && refRun?.mode !== s.mode)
    throw new Error(`${s.name}: the reference run went ${refRun?.mode ?? "inline"}, not ${s.mode}`);
  const first = await check(ref, s, reference);
  if (first) throw new Error(`${s.name}: the scenario without faults breaks an invariant: ${first}`);
  const tally: Tally = { tried: 0, failures: [] };
  for (let k = 1; k <= counter.count; k++) {
    const world = start.clone();
    const plan = new FaultPlan().add(
      mode === "crash" ? { at: k, crash: true } : { at: k, fail: transientError },
    );
    const oldBase = (await world.lineage.getDisk(DISK))!.baseSnapshot;
    let threw: unknown;
    try {
      await s.act(world.process(plan), world);
    } catch (err) {
      threw = err;
    }
    if (mode === "crash" && !(threw instanceof CrashError) && plan.crashed)
      threw = threw ?? new Error("swallowed");
    const what = `${s.name}, ${mode} at operation ${k} (${counter.names[k - 1]})`;
    // The base is never deleted before the next point is sealed.
    if (oldBase) {
      const disk = (await world.lineage.getDisk(DISK))!;
      const sealedNew = (await world.lineage.listPoints(DISK)).length === s.points;
      const baseThere = await world.store.properties({
        kind: "blob",
        location: sourceBlobLocation(disk)!,
        snapshot: oldBase,
      });
      if (!baseThere && !sealedNew && s.name !== "resync (the base is gone, the service refuses the diff)") {
        tally.failures.push(`${what}: the base ${oldBase} was deleted before the next point was sealed`);
      }
    }
    // The next invocation: a dead process's lease and holds have lapsed by then.
    world.advance(10 * 60_000);
    const disk = (await world.lineage.getDisk(DISK))!;
    const resumed = counting(world.process(), backupLocation(disk).url);
    if (threw !== undefined || (!s.check && (await world.lineage.listPoints(DISK)).length < s.points)) {
      try {
        await s.resume(resumed.app, world);
      } catch (err) {
        tally.failures.push(`${what}: the resume failed: ${(err as Error).message}`);
        tally.tried++;
        continue;
      }
    }
    if (resumed.written() > s.mayRewrite)
      tally.failures.push(
        `${what}: the resumed process wrote ${resumed.written()} bytes, more than the ${s.mayRewrite} the run had to`,
      );
    const problem = await check(world, s, reference);
    if (problem) tally.failures.push(`${what}: ${problem}`);
    tally.tried++;
  }
  return { n: counter.count, tally };
}

const summary: string[] = [];
afterAll(() => {
  // The counts the issue asks to see: runs × crash points tried, failures found.
  process.stdout.write(`crash simulation:\n${summary.map((l) => `  ${l}`).join("\n")}\n`);
});

describe.each(SCENARIOS.map((s) => [s.name, s] as const))("%s", (_name, s) => {
  test.each(["crash", "fail"] as const)(
    "a %s at every operation of the run leaves every invariant standing",
    async (mode) => {
      const { n, tally } = await explore(s, mode);
      summary.push(
        `${s.name}: ${n} operations, ${tally.tried} ${mode === "crash" ? "crashes" : "transient failures"} tried, ${tally.failures.length} failures found`,
      );
      expect(tally.failures).toEqual([]);
      expect(tally.tried).toBe(n);
    },
  );
});
