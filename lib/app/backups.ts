/**
 * Backups as the app's triggers start them: a trigger (timer, HTTP) claims a run and queues its
 * start; the backup-requests trigger plans it (copying a small change set itself or fanning a
 * large one out); the chunks trigger copies one batch; a poison message fails its run. The run's
 * state lives in lib/backup; this file only turns messages into those calls and back.
 */
import { claimQueuedRun, copyBatch, failRun, planQueuedRun } from "../backup/fanout";
import type { RunRecord, RunTrigger } from "../lineage/types";
import { parseMessage, QUEUES, type BackupRequestMessage, type ChunkMessage } from "../queues/messages";
import type { App } from "./context";

/**
 * Claims a run for `diskId` and queues its start. Throws BusyError (naming the holder) when the
 * disk has a live run.
 */
export async function requestBackup(
  app: App,
  diskId: string,
  trigger: RunTrigger,
  options: { force?: boolean } = {},
): Promise<RunRecord> {
  const run = await claimQueuedRun(app, diskId, trigger);
  const message: BackupRequestMessage = {
    diskId,
    runId: run.id,
    trigger,
    ...(options.force ? { force: true } : {}),
  };
  await app.queues.send(QUEUES.backupRequests, message);
  app.log.info(`queued run ${run.id} of disk ${diskId} (${trigger})`);
  return run;
}

/** The backup-requests trigger: start (or continue planning) a claimed run. */
export async function handleBackupRequest(app: App, msg: BackupRequestMessage): Promise<void> {
  const outcome = await planQueuedRun(
    app,
    msg.diskId,
    msg.runId,
    msg.trigger,
    async (batch) => {
      const message: ChunkMessage = {
        diskId: msg.diskId,
        runId: msg.runId,
        batch: batch.batch,
        generation: batch.generation,
        chunks: batch.chunks.map((c) => ({ index: c.index, ranges: c.ranges.map((r) => [r.start, r.end]) })),
      };
      await app.queues.send(QUEUES.chunks, message);
    },
    msg.force,
  );
  switch (outcome.state) {
    case "gone":
      app.log.info(
        `run ${msg.runId} of disk ${msg.diskId} is finished or held by another invocation; nothing to do`,
      );
      return;
    case "continue":
      await app.queues.send(QUEUES.backupRequests, {
        ...msg,
        continuePlan: true,
      } satisfies BackupRequestMessage);
      return;
    case "fanned-out":
      app.log.info(`run ${msg.runId}: ${outcome.batches} batches queued for the workers`);
      return;
    case "ended":
      return;
  }
}

/** The chunk trigger: copy one batch (idempotent), count it once, and seal if it was the last. */
export async function handleChunkMessage(app: App, msg: ChunkMessage): Promise<void> {
  await copyBatch(app, {
    diskId: msg.diskId,
    runId: msg.runId,
    batch: msg.batch,
    generation: msg.generation,
    chunks: msg.chunks.map((c) => ({
      index: c.index,
      ranges: c.ranges.map(([start, end]) => ({ start, end })),
    })),
  });
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
