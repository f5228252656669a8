/**
 * The run's fan-out half, owned here with the rest of the run's state (the app's queue triggers
 * only adapt messages to these): claiming a run for the queue, planning it in one or more
 * invocations, copying one batch (at-least-once: a repeated batch rewrites the same bytes),
 * counting it once in the lineage, and sealing exactly once — the move from copying to sealing is
 * one ETag-guarded write, so when the last batches finish at the same instant one invocation wins
 * and seals. A batch refused by the fence (a newer run owns the blob) or failing permanently fails
 * its run; a message that reached a poison queue fails its run with the reason.
 */
import { forEachBounded } from "../core/concurrency";
import { messageOf } from "../core/errors";
import { isRetryable } from "../core/retry";
import { ChunkCopier, joinChunks } from "../copy/copier";
import { backupLocation } from "../lineage/locations";
import { TERMINAL_STATES, type RunRecord, type RunTrigger } from "../lineage/types";
import { totalBytes, type PageRange } from "../ranges";
import { isFenced } from "../storage/errors";
import { claimRun, leaseFrom, ownerId, QUEUED_OWNER } from "./claim";
import type { PlannedBatch } from "./pipeline";
import { callHook, continueRun, resumeOwnedRun, type BackupDeps } from "./run";
import { cleanUpFailedRun, settleFinishedRun } from "./seal";
import { guardedRunUpdate } from "./tracker";

/**
 * Claims a run for `diskId` to be started by a queue worker. Throws BusyError (naming the holder)
 * when the disk has a live run. The run's lease covers the time a message may wait in the queue.
 */
export async function claimQueuedRun(
  deps: BackupDeps,
  diskId: string,
  trigger: RunTrigger,
): Promise<RunRecord> {
  const { run } = await claimRun(
    {
      lineage: deps.lineage,
      // A queued run must not be taken over while its message waits: give it the plan time
      // limit plus the lease, after which a lost message no longer blocks the disk.
      leaseSeconds: deps.config.planSeconds + deps.config.leaseSeconds,
      owner: QUEUED_OWNER,
      now: deps.now,
      log: (m) => deps.log.info(m),
    },
    diskId,
    trigger,
  );
  return run;
}

export type PlanOutcome =
  | { state: "gone" }
  | { state: "continue" }
  | { state: "fanned-out"; batches: number }
  | { state: "ended"; run: RunRecord };

/** Starts, or continues planning, a queued run; `send` sends one batch to the chunk queue. */
export async function planQueuedRun(
  deps: BackupDeps,
  diskId: string,
  runId: string,
  trigger: RunTrigger,
  send: (batch: PlannedBatch) => Promise<void>,
  force?: boolean,
): Promise<PlanOutcome> {
  const { config } = deps;
  const [disk, current] = await Promise.all([
    deps.lineage.getDisk(diskId),
    deps.lineage.getRun(diskId, runId),
  ]);
  if (disk && current && TERMINAL_STATES.includes(current.state)) {
    // A redelivered request of a run that ended: finish the bookkeeping a crash may have cut short.
    await settleFinishedRun(deps, disk, current);
    return { state: "gone" };
  }
  const run = await continueRun(
    deps,
    diskId,
    runId,
    {
      trigger,
      force,
      takeOverFrom: QUEUED_OWNER,
      fanout: {
        thresholdBytes: config.fanoutBytes,
        batchChunks: config.batchChunks,
        deadline: Date.now() + config.planSeconds * 1000,
        pauseOwner: QUEUED_OWNER,
        send,
      },
    },
    "permanent",
  );
  if (!run) return { state: "gone" };
  if (run.state === "copying" && run.planComplete !== "yes") return { state: "continue" };
  if (run.state === "copying") {
    await sealIfComplete(deps, diskId, runId);
    return { state: "fanned-out", batches: run.batchesTotal ?? 0 };
  }
  return { state: "ended", run };
}

export interface BatchMessage {
  diskId: string;
  runId: string;
  batch: number;
  generation: number;
  chunks: Array<{ index: number; ranges: PageRange[] }>;
}

/** Copies one batch (idempotent), counts it once, and seals the run if it was the last. */
export async function copyBatch(deps: BackupDeps, msg: BatchMessage): Promise<"copied" | "stale" | "failed"> {
  const [disk, run] = await Promise.all([
    deps.lineage.getDisk(msg.diskId),
    deps.lineage.getRun(msg.diskId, msg.runId),
  ]);
  if (disk && run && run.state === "sealing") {
    // A late delivery to a run whose sealer died (its lease lapsed): finish the seal here.
    const sealed = await continueRun(deps, msg.diskId, msg.runId, { trigger: run.trigger }, "permanent");
    if (sealed)
      deps.log.info(`batch ${msg.batch} of run ${msg.runId}: took over the seal of a dead invocation`);
    return "stale";
  }
  if (disk && run && TERMINAL_STATES.includes(run.state)) {
    // Bookkeeping a crash may have cut short (the base advanced, the old one deleted): done again, idempotently.
    await settleFinishedRun(deps, disk, run);
    deps.log.info(`batch ${msg.batch} of run ${msg.runId}: the run is ${run.state}; nothing to copy`);
    return "stale";
  }
  // A dead planner's batch past where its successor started planning again: the successor sends
  // those chunks in batches of its own, so copying this one would only write them twice.
  if (
    run &&
    run.state === "copying" &&
    msg.generation !== run.planGeneration &&
    msg.batch >= (run.generationStart ?? 0)
  ) {
    deps.log.info(
      `batch ${msg.batch} of run ${msg.runId} belongs to an earlier planner and was planned again; skipped`,
    );
    return "stale";
  }
  if (!disk || !run || run.state !== "copying" || !run.sourceSnapshot) {
    deps.log.info(
      `batch ${msg.batch} of run ${msg.runId}: the run is ${run?.state ?? "gone"}; nothing to copy`,
    );
    return "stale";
  }
  const source = deps.sources.of(disk);
  const opened = await source.open(run.sourceSnapshot);
  let bytes = 0;
  try {
    const copier = new ChunkCopier(
      deps.storage,
      opened.address,
      { kind: "blob", location: backupLocation(disk) },
      deps.config.copyMode,
      run.fence,
    );
    const chunks = msg.chunks.map((c) => ({ index: c.index, ranges: c.ranges, bytes: totalBytes(c.ranges) }));
    await forEachBounded(joinChunks(chunks), deps.config.copyConcurrency, async (group) => {
      const copied = await copier.copyChunks(group);
      bytes += copied;
    });
  } catch (err) {
    if (isRetryable(err)) throw err; // the host redelivers the message
    // A fenced batch is a straggler: a newer run owns the backup blob, so it wrote nothing, and its
    // run, if still open, cannot be completed by it.
    const why = isFenced(err)
      ? "the backup blob was taken over by a newer run (its sequence number is no longer this run's fence)"
      : messageOf(err);
    await failRun(deps, msg.diskId, msg.runId, `batch ${msg.batch}: ${why}`);
    return "failed";
  } finally {
    // Other workers (other instances) read through their own SAS of this snapshot: keep access;
    // the run's sealer ends it.
    await opened.close(true);
  }
  // Count only batches of the current planner generation, or those below where it started:
  // a dead planner's batches past its checkpoint were planned again by its successor.
  const fresh = await deps.lineage.getRun(msg.diskId, msg.runId);
  if (!fresh || fresh.state !== "copying") return "stale";
  const counts = msg.generation === fresh.planGeneration || msg.batch < (fresh.generationStart ?? 0);
  if (!counts) {
    deps.log.info(
      `batch ${msg.batch} of run ${msg.runId} belongs to an earlier planner; copied, not counted`,
    );
    return "stale";
  }
  if (
    await deps.lineage.countBatch(
      msg.diskId,
      msg.runId,
      { generation: msg.generation, batch: msg.batch },
      { bytesCopied: bytes, chunksDone: msg.chunks.length },
    )
  ) {
    await extendLease(deps, fresh);
  }
  await sealIfComplete(deps, msg.diskId, msg.runId);
  return "copied";
}

/** Keeps a fanned-out run's lease alive while batches complete, so timers see it as busy. */
async function extendLease(deps: BackupDeps, run: RunRecord): Promise<void> {
  const now = deps.now();
  if (Date.parse(run.leaseUntil) - now.getTime() > (deps.config.leaseSeconds * 1000) / 2) return;
  await guardedRunUpdate(deps.lineage, run.diskId, run.id, (current) =>
    current.state === "copying" ? { leaseUntil: leaseFrom(now, deps.config.leaseSeconds) } : undefined,
  );
}

/**
 * Seals a fanned-out run once its plan is complete and every counted batch is done. The move from
 * copying to sealing is one ETag-guarded write, so exactly one invocation wins it and seals.
 */
export async function sealIfComplete(
  deps: BackupDeps,
  diskId: string,
  runId: string,
): Promise<RunRecord | undefined> {
  const run = await deps.lineage.getRun(diskId, runId);
  if (!run || run.state !== "copying" || run.planComplete !== "yes") return undefined;
  const progress = await deps.lineage.batchProgress(diskId, runId);
  if (progress.batches < (run.batchesTotal ?? 0)) return undefined;
  const now = deps.now();
  let sealing: RunRecord;
  try {
    sealing = await deps.lineage.updateRun({
      ...run,
      state: "sealing",
      owner: ownerId(),
      leaseUntil: leaseFrom(now, deps.config.leaseSeconds),
      updatedAt: now.toISOString(),
      bytesCopied: run.bytesCopied + progress.bytesCopied,
      chunksDone: run.chunksDone + progress.chunksDone,
    });
  } catch (err) {
    if ((err as Error).name === "ConflictError") return undefined; // another invocation is sealing it
    throw err;
  }
  const disk = await deps.lineage.getDisk(diskId);
  if (!disk) throw new Error(`disk ${diskId} disappeared from the lineage`);
  deps.log.info(`run ${runId}: all ${run.batchesTotal} batches done; sealing`);
  return resumeOwnedRun(deps, disk, sealing);
}

/**
 * Fails run `runId` with `reason` (unless it already ended): the run row says why, then the disk
 * is released and what the run made deleted.
 */
export async function failRun(
  deps: BackupDeps,
  diskId: string,
  runId: string,
  reason: string,
): Promise<void> {
  let before: RunRecord | undefined;
  const failed = await guardedRunUpdate(deps.lineage, diskId, runId, (current) => {
    if (TERMINAL_STATES.includes(current.state)) return undefined;
    before = current;
    return {
      state: "failed",
      error: reason,
      finishedAt: deps.now().toISOString(),
      updatedAt: deps.now().toISOString(),
    };
  });
  if (!failed || !before) return;
  deps.log.error(`run ${runId} of disk ${diskId} failed: ${reason}`);
  const disk = await deps.lineage.getDisk(diskId);
  if (!disk) return;
  await cleanUpFailedRun(deps, disk, before, deps.sources.of(disk));
  await callHook(deps, "runEnded", () => deps.hooks?.runEnded?.(failed, disk));
}

/** A run's progress as it truly is: a fanned-out run's batches count in the lineage until it seals. */
export async function runProgress(deps: BackupDeps, run: RunRecord) {
  const counted =
    run.mode === "fanout" && run.state === "copying"
      ? await deps.lineage.batchProgress(run.diskId, run.id)
      : undefined;
  return {
    chunksDone: run.chunksDone + (counted?.chunksDone ?? 0),
    chunksTotal: run.chunksTotal,
    bytesPlanned: run.bytesPlanned,
    bytesCopied: run.bytesCopied + (counted?.bytesCopied ?? 0),
    bytesCleared: run.bytesCleared,
    batchesDone: counted?.batches,
    batchesTotal: run.batchesTotal,
    position: run.checkpoint,
    size: run.sourceSize,
    mode: run.mode,
  };
}
