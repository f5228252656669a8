/**
 * The end of a run: seal the restore point, then advance the base; or, when nothing changed,
 * record the run as unchanged and keep the base; or, after a failure, release the disk and delete
 * what the run made. Guarantees: the base is deleted only after the new point is recorded and the
 * disk row points at the new base; a recorded point's snapshot is never touched by a cleanup; an
 * unrecorded seal snapshot of a failed run is deleted (tagged with the run, no row names it).
 */
import { ConflictError, messageOf } from "../core/errors";
import type { Deps } from "../deps";
import { backupLocation, pointIdOf } from "../lineage/locations";
import type { DiskRecord, RunRecord } from "../lineage/types";
import type { Source } from "../sources/port";
import { adoptOrTakeSnapshot, taggedSnapshots } from "../sources/tagged";
import type { BlobLocation } from "../storage/urls";
import { advancedDisk, releaseClaim } from "./claim";
import type { RunTracker } from "./tracker";

/** Snapshot of the backup blob (adopted after a crash), the point row, the run succeeded. */
export async function seal(
  deps: Deps,
  disk: DiskRecord,
  tracker: RunTracker,
  backup: BlobLocation,
): Promise<void> {
  const run = () => tracker.current;
  let backupSnapshot = run().backupSnapshot;
  if (!backupSnapshot) {
    backupSnapshot = await adoptOrTakeSnapshot(deps.storage, backup, disk.id, run().id);
    await tracker.update({ backupSnapshot });
  }
  const pointId = pointIdOf(run().id);
  if (!(await deps.lineage.getPoint(disk.id, pointId))) {
    try {
      await deps.lineage.addPoint({
        id: pointId,
        diskId: disk.id,
        runId: run().id,
        kind: run().kind,
        backupSnapshot,
        backupUrl: backup.url,
        sourceSnapshot: run().sourceSnapshot ?? "",
        size: run().sourceSize ?? 0,
        createdAt: deps.now().toISOString(),
        ...(run().sourceCapturedAt ? { capturedAt: run().sourceCapturedAt } : {}),
      });
    } catch (err) {
      // A retried add whose first try landed: the row is ours.
      if (!(err instanceof ConflictError)) throw err;
    }
  }
  await tracker.update({ state: "succeeded", restorePoint: pointId, finishedAt: deps.now().toISOString() });
  deps.log.info(`run ${run().id}: sealed restore point ${pointId} (backup snapshot ${backupSnapshot})`);
}

/** Points the disk at the new base, releases it, then (only then) deletes the old base. */
export async function advanceBase(
  deps: Deps,
  disk: DiskRecord,
  run: RunRecord,
  source: Source,
): Promise<DiskRecord> {
  const previousBase = disk.baseSnapshot;
  let current = disk;
  for (let pass = 0; ; pass++) {
    const row = await deps.lineage.getDisk(disk.id);
    if (!row) throw new Error(`disk ${disk.id} disappeared from the lineage`);
    if (row.baseSnapshot === run.sourceSnapshot && row.activeRunId !== run.id) {
      current = row;
      break;
    }
    try {
      current = await deps.lineage.updateDisk(advancedDisk(row, run));
      break;
    } catch (err) {
      if (pass >= 5 || !(err instanceof ConflictError)) throw err;
    }
  }
  if (previousBase && previousBase !== run.sourceSnapshot) {
    try {
      await source.deleteSnapshot(previousBase);
    } catch (err) {
      // The restore point is sealed; a snapshot that could not be deleted now is swept by the next run.
      deps.log.warn(`could not delete the old base ${previousBase}: ${messageOf(err)}`);
    }
  }
  return current;
}

/**
 * A run that found nothing changed: its own snapshot goes, the base stays (it equals the disk),
 * the run ends `unchanged` and the disk's last success moves to now — it was proved current.
 */
export async function finishUnchanged(
  deps: Deps,
  disk: DiskRecord,
  tracker: RunTracker,
  source: Source,
): Promise<void> {
  const run = tracker.current;
  const finishedAt = deps.now().toISOString();
  await tracker.update({
    state: "unchanged",
    finishedAt,
    reason: run.reason ?? "nothing changed since the base; no restore point was made",
  });
  for (let pass = 0; pass < 5; pass++) {
    const row = await deps.lineage.getDisk(disk.id);
    if (!row || row.activeRunId !== run.id) break;
    try {
      await deps.lineage.updateDisk({
        ...row,
        activeRunId: undefined,
        lastRunId: run.id,
        lastSuccessAt: finishedAt,
      });
      break;
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
    }
  }
  if (run.sourceSnapshot && run.sourceSnapshot !== disk.baseSnapshot) {
    await source
      .deleteSnapshot(run.sourceSnapshot)
      .catch((err: unknown) =>
        deps.log.warn(
          `could not delete snapshot ${run.sourceSnapshot}: ${messageOf(err)}; the next run sweeps it`,
        ),
      );
  }
  deps.log.info(`run ${run.id}: nothing changed; no restore point made`);
}

/**
 * The bookkeeping of a run that already ended, done again where a crash may have cut it short
 * (idempotent): a succeeded run's disk row points at its snapshot as the base and the base it
 * diffed from is deleted; a run that failed or found nothing changed no longer holds the disk.
 */
export async function settleFinishedRun(deps: Deps, disk: DiskRecord, run: RunRecord): Promise<void> {
  const source = deps.sources.of(disk);
  if (run.state === "succeeded" && run.sourceSnapshot) {
    const advanced =
      disk.baseSnapshot === run.sourceSnapshot && disk.activeRunId !== run.id
        ? disk
        : await advanceBase(deps, disk, run, source);
    if (run.baseSnapshot && run.baseSnapshot !== advanced.baseSnapshot) {
      await source
        .deleteSnapshot(run.baseSnapshot)
        .catch((err: unknown) =>
          deps.log.warn(`could not delete the old base ${run.baseSnapshot}: ${messageOf(err)}`),
        );
    }
    return;
  }
  await releaseClaim(deps.lineage, disk.id, run.id);
}

/**
 * After run `run` (as it was before it failed) was marked failed: releases the disk, deletes the
 * run's source snapshot unless it is the base, and, if it failed while sealing, the backup
 * snapshot its seal took but never recorded. Best effort: what fails here is logged, and the next
 * run finishes it (claimRun releases a finished run's lock; the sweep deletes leaked snapshots).
 */
export async function cleanUpFailedRun(
  deps: Deps,
  disk: DiskRecord,
  run: RunRecord,
  source: Source,
): Promise<void> {
  try {
    await releaseClaim(deps.lineage, disk.id, run.id);
    if (run.sourceSnapshot && run.sourceSnapshot !== disk.baseSnapshot)
      await source.deleteSnapshot(run.sourceSnapshot);
    if (run.state === "sealing") await deleteUnrecordedSealSnapshots(deps, disk, run.id);
  } catch (err) {
    deps.log.warn(
      `run ${run.id}: cleanup after the failure was incomplete (${messageOf(err)}); the next run finishes it`,
    );
  }
}

async function deleteUnrecordedSealSnapshots(deps: Deps, disk: DiskRecord, runId: string): Promise<void> {
  if (await deps.lineage.getPoint(disk.id, pointIdOf(runId))) return;
  const backup = backupLocation(disk);
  for (const t of (await taggedSnapshots(deps.storage, backup, disk.id)).filter((t) => t.runId === runId)) {
    await deps.storage.delete({ kind: "blob", location: backup, snapshot: t.id });
    deps.log.info(`run ${runId}: deleted its backup snapshot ${t.id}, which no restore point records`);
  }
}
