/**
 * Backups as the app runs them: a trigger (timer, HTTP) claims a run and queues its start; the
 * backup-requests handler snapshots, plans and copies a small change set itself or fans a large
 * one out as chunk batches; chunk workers copy batches; exactly one invocation seals the run.
 */
import { claimRun } from "../backup/claim";
import type { RunRecord, RunTrigger } from "../lineage/types";
import { QUEUES, type BackupRequestMessage } from "./queues";
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
