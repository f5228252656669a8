/**
 * Backups as the app runs them: a trigger (timer, HTTP) claims a run and queues its start; the
 * backup-requests handler snapshots, plans and copies a small change set itself or fans a large
 * one out as chunk batches; chunk workers copy batches; exactly one invocation seals the run.
 */
import { errorInfo, isFenced, isNotFound, isRetryable } from "../azure/errors";
import { claimRun, leaseFrom, ownerId } from "../backup/claim";
import { continueRun, diskLocations, failRun, resumeOwnedRun, retryPolicy } from "../backup/run";
import { forEachBounded } from "../concurrency";
import { PageCopier } from "../copy";
import { ConflictError, type RunRecord, type RunTrigger } from "../lineage/types";
import { totalBytes } from "../ranges";
import { parseMessage, QUEUES, type BackupRequestMessage, type ChunkMessage } from "./queues";
import type { App } from "./runtime";

/** Owner of a run that is claimed but not yet picked up by a backup-requests worker. */
export const QUEUED_OWNER = "queued:0";

/**
 * Claims a run for `diskId` and queues its start. Throws BusyError (naming the active run) when
 * the disk has a live run. The run's lease covers the time a message may wait in the queue.
 */
export async function requestBackup(app: App, diskId: string, trigger: RunTrigger): Promise<RunRecord> {
  const now = app.now ?? (() => new Date());
  const { run } = await claimRun(
    {
      lineage: app.lineage,
      // A queued run must not be taken over while its message waits: give it the plan time
      // limit plus the lease, after which a lost message no longer blocks the disk.
      leaseSeconds: app.config.planSeconds + app.config.leaseSeconds,
      owner: QUEUED_OWNER,
      now,
      log: (m) => app.log.info(m),
    },
    diskId,
    trigger,
  );
  const message: BackupRequestMessage = { diskId, runId: run.id, trigger };
  await app.queues.send(QUEUES.backupRequests, message);
  app.log.info(`queued run ${run.id} of disk ${diskId} (${trigger})`);
  return run;
}

/**
 * Where fan-out completion is counted: one partition per run, holding a `counter` row and one
 * marker row per counted batch. A batch is counted in one table transaction that creates its
 * marker and bumps the counter under the counter's ETag, so a redelivered batch (marker exists)
 * is never counted twice and a crash can never leave a marker without its count.
 */
export function progressTable(app: App) {
  return app.clients.table(`${app.config.tablePrefix}Progress`);
}

interface Counter {
  done: number;
  bytesCopied: number;
  chunksDone: number;
  etag?: string;
}

/** One row of the progress table, or undefined when it does not exist. */
async function progressRow<T extends object>(app: App, runId: string, rowKey: string) {
  try {
    return await progressTable(app).getEntity<T>(runId, rowKey);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

async function readCounter(app: App, runId: string): Promise<Counter | undefined> {
  const e = await progressRow<{ done: number; bytesCopied: number; chunksDone: number }>(
    app,
    runId,
    "counter",
  );
  if (!e) return undefined;
  return {
    done: Number(e.done),
    bytesCopied: Number(e.bytesCopied),
    chunksDone: Number(e.chunksDone),
    etag: e.etag,
  };
}

/** Counts batch (generation, batch) once. Returns false when it was counted before. */
async function countBatch(app: App, msg: ChunkMessage, bytes: number, chunks: number): Promise<boolean> {
  const table = progressTable(app);
  const marker = { partitionKey: msg.runId, rowKey: `b-${msg.generation}-${msg.batch}` };
  for (let pass = 0; pass < 50; pass++) {
    const counter = await readCounter(app, msg.runId);
    const next = {
      partitionKey: msg.runId,
      rowKey: "counter",
      done: { value: String((counter?.done ?? 0) + 1), type: "Double" as const },
      bytesCopied: { value: String((counter?.bytesCopied ?? 0) + bytes), type: "Double" as const },
      chunksDone: { value: String((counter?.chunksDone ?? 0) + chunks), type: "Double" as const },
    };
    try {
      await table.submitTransaction([
        ["create", marker],
        counter ? ["update", next, "Replace", { etag: counter.etag }] : ["create", next],
      ]);
      return true;
    } catch (err) {
      const { status, code } = errorInfo(err);
      const markerExists =
        status === 409 &&
        code === "EntityAlreadyExists" &&
        (await progressRow(app, marker.partitionKey, marker.rowKey)) !== undefined;
      if (markerExists) return false;
      // 412 (another batch moved the counter) or 409 on a counter created meanwhile: read again.
      if (status === 412 || status === 409) {
        await new Promise((r) => setTimeout(r, Math.random() * 20 * Math.min(pass + 1, 10)));
        continue;
      }
      throw err;
    }
  }
  throw Object.assign(
    new Error(`could not record batch ${msg.batch} of run ${msg.runId}: too much contention`),
    { statusCode: 503 },
  );
}

/** The backup-requests trigger: start (or continue planning) a claimed run. */
export async function handleBackupRequest(app: App, msg: BackupRequestMessage): Promise<void> {
  const { config } = app;
  const run = await continueRun(
    app,
    msg.diskId,
    msg.runId,
    {
      trigger: msg.trigger,
      takeOverFrom: QUEUED_OWNER,
      fanout: {
        thresholdBytes: config.fanoutBytes,
        batchChunks: config.batchChunks,
        deadline: Date.now() + config.planSeconds * 1000,
        pauseOwner: QUEUED_OWNER,
        send: async (batch) => {
          const message: ChunkMessage = {
            diskId: msg.diskId,
            runId: msg.runId,
            batch: batch.batch,
            generation: batch.generation,
            chunks: batch.chunks.map((c) => ({
              index: c.index,
              ranges: c.ranges.map((r) => [r.start, r.end]),
            })),
          };
          await app.queues.send(QUEUES.chunks, message);
        },
      },
    },
    "permanent",
  );
  if (!run) {
    app.log.info(
      `run ${msg.runId} of disk ${msg.diskId} is finished or held by another invocation; nothing to do`,
    );
    return;
  }
  if (run.state === "copying" && run.planComplete !== "yes") {
    await app.queues.send(QUEUES.backupRequests, {
      ...msg,
      continuePlan: true,
    } satisfies BackupRequestMessage);
    return;
  }
  if (run.state === "copying") {
    app.log.info(`run ${run.id}: ${run.batchesTotal ?? 0} batches queued for the workers`);
    await sealIfComplete(app, msg.diskId, msg.runId);
  }
}

/** The chunk trigger: copy one batch (idempotent), count it once, and seal if it was the last. */
export async function handleChunkMessage(app: App, msg: ChunkMessage): Promise<void> {
  const [disk, run] = await Promise.all([
    app.lineage.getDisk(msg.diskId),
    app.lineage.getRun(msg.diskId, msg.runId),
  ]);
  if (!disk || !run || run.state !== "copying" || !run.sourceSnapshot) {
    app.log.info(
      `batch ${msg.batch} of run ${msg.runId}: the run is ${run?.state ?? "gone"}; nothing to copy`,
    );
    return;
  }
  const { source, backup } = diskLocations(disk);
  const policy = retryPolicy(app.config, app.log);
  const copier = new PageCopier(
    app.clients,
    { location: source, snapshot: run.sourceSnapshot },
    app.clients.pageBlob(backup),
    policy,
    app.config.copyMode,
    run.fence,
  );
  let bytes = 0;
  try {
    await forEachBounded(msg.chunks, app.config.copyConcurrency, async (c) => {
      const ranges = c.ranges.map(([start, end]) => ({ start, end }));
      const copied = await copier.copyChunk({ index: c.index, ranges, bytes: totalBytes(ranges) });
      bytes += copied;
    });
  } catch (err) {
    if (isRetryable(err)) throw err; // the host redelivers the message
    // A fenced batch is a straggler: a newer run owns the backup blob, so it wrote nothing, and its
    // run, if still open, cannot be completed by it.
    const why = isFenced(err)
      ? "the backup blob was taken over by a newer run (its sequence number is no longer this run's fence)"
      : errorInfo(err).message;
    await failRun(app, msg.diskId, msg.runId, `batch ${msg.batch}: ${why}`);
    return;
  }
  // Count only batches of the current planner generation, or those below where it started:
  // a dead planner's batches past its checkpoint were planned again by its successor.
  const fresh = await app.lineage.getRun(msg.diskId, msg.runId);
  if (!fresh || fresh.state !== "copying") return;
  const counts = msg.generation === fresh.planGeneration || msg.batch < (fresh.generationStart ?? 0);
  if (!counts) {
    app.log.info(`batch ${msg.batch} of run ${msg.runId} belongs to an earlier planner; copied, not counted`);
    return;
  }
  if (await countBatch(app, msg, bytes, msg.chunks.length)) await extendLease(app, fresh);
  await sealIfComplete(app, msg.diskId, msg.runId);
}

/** Keeps a fanned-out run's lease alive while batches complete, so timers see it as busy. */
async function extendLease(app: App, run: RunRecord): Promise<void> {
  const now = (app.now ?? (() => new Date()))();
  const until = Date.parse(run.leaseUntil);
  if (until - now.getTime() > (app.config.leaseSeconds * 1000) / 2) return;
  try {
    await app.lineage.updateRun({
      ...run,
      leaseUntil: leaseFrom(now, app.config.leaseSeconds),
    });
  } catch (err) {
    if (!(err instanceof ConflictError)) throw err;
  }
}

/**
 * Seals a fanned-out run once its plan is complete and every counted batch is done. The move from
 * copying to sealing is one ETag-guarded write, so when the last batches finish at the same
 * instant exactly one invocation wins it and seals; the others see the conflict and stop.
 */
export async function sealIfComplete(
  app: App,
  diskId: string,
  runId: string,
): Promise<RunRecord | undefined> {
  const run = await app.lineage.getRun(diskId, runId);
  if (!run || run.state !== "copying" || run.planComplete !== "yes") return undefined;
  const counter = await readCounter(app, runId);
  if ((counter?.done ?? 0) < (run.batchesTotal ?? 0)) return undefined;
  const now = (app.now ?? (() => new Date()))();
  let sealing: RunRecord;
  try {
    sealing = await app.lineage.updateRun({
      ...run,
      state: "sealing",
      owner: ownerId(),
      leaseUntil: leaseFrom(now, app.config.leaseSeconds),
      updatedAt: now.toISOString(),
      bytesCopied: run.bytesCopied + (counter?.bytesCopied ?? 0),
      chunksDone: run.chunksDone + (counter?.chunksDone ?? 0),
    });
  } catch (err) {
    if (err instanceof ConflictError) return undefined; // another invocation is sealing it
    throw err;
  }
  const disk = await app.lineage.getDisk(diskId);
  if (!disk) throw new Error(`disk ${diskId} disappeared from the lineage`);
  app.log.info(`run ${runId}: all ${run.batchesTotal} batches done; sealing`);
  return resumeOwnedRun(app, disk, sealing);
}

/** A message that reached a poison queue fails its run, visibly, with the reason. */
export async function handlePoisonMessage(app: App, queue: string, raw: unknown): Promise<void> {
  let diskId: string | undefined;
  let runId: string | undefined;
  let what = "a message";
  try {
    const m = parseMessage(raw);
    diskId = typeof m.diskId === "string" ? m.diskId : undefined;
    runId = typeof m.runId === "string" ? m.runId : undefined;
    if (typeof m.batch === "number") what = `batch ${m.batch}`;
  } catch {
    app.log.error(`a message on ${queue} is not JSON; dropped`);
    return;
  }
  if (!diskId || !runId) {
    app.log.error(`a message on ${queue} names no run; dropped`);
    return;
  }
  await failRun(app, diskId, runId, `${what} failed on every delivery and was moved to ${queue}`);
}

/** Progress of a run for the API: a fanned-out run's counters live in the progress table until it seals. */
export async function runProgress(
  app: App,
  diskId: string,
  runId: string,
): Promise<
  { chunksDone: number; chunksTotal: number; bytesCopied: number; bytesCleared: number } | undefined
> {
  const run = await app.lineage.getRun(diskId, runId);
  if (!run) return undefined;
  const counter =
    run.mode === "fanout" && run.state === "copying" ? await readCounter(app, runId) : undefined;
  return {
    chunksDone: run.chunksDone + (counter?.chunksDone ?? 0),
    chunksTotal: run.chunksTotal,
    bytesCopied: run.bytesCopied + (counter?.bytesCopied ?? 0),
    bytesCleared: run.bytesCleared,
  };
}
