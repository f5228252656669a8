/**
 * The JSON shapes of disks, runs and restore points, shared by the CLI's --json output and the
 * HTTP API, so a script written against one reads the other, and the HTTP request bodies take the
 * shapes these answers show (retention is `{keepLast, keepDaily, keepWeekly, keepMonthly}`
 * everywhere). Keys are stable; absent values are left out (JSON.stringify drops undefined). No
 * shape holds a credential: records never do, and URLs are stored without SAS.
 */
import { pointTimeIso, type DiskRecord, type RestorePointRecord, type RunRecord } from "../lineage/types";
import { policyOf } from "../retention/policy";

export function runJson(run: RunRecord) {
  return {
    id: run.id,
    diskId: run.diskId,
    trigger: run.trigger,
    kind: run.kind,
    detection: run.detection,
    state: run.state,
    startedAt: run.startedAt,
    finishedAt: run.finishedAt,
    bytesCopied: run.bytesCopied,
    bytesCleared: run.bytesCleared,
    rangesWritten: run.rangesWritten,
    rangesCleared: run.rangesCleared,
    chunks: run.chunksTotal,
    sourceSnapshot: run.sourceSnapshot,
    restorePoint: run.restorePoint,
    backupSnapshot: run.backupSnapshot,
    reason: run.reason,
    error: run.error,
  };
}

export function diskJson(d: DiskRecord) {
  return {
    id: d.id,
    source: d.sourceDiskId ?? d.sourceUrl,
    sourceKind: d.sourceDiskId ? "managed-disk" : "page-blob",
    backupAccount: d.backupAccountUrl,
    backupContainer: d.backupContainer,
    backupBlob: d.backupBlob,
    createdAt: d.createdAt,
    baseSnapshot: d.baseSnapshot,
    lastSuccessAt: d.lastSuccessAt,
    activeRun: d.activeRunId,
    intervalMinutes: d.intervalMinutes,
    retention: retentionJson(d),
  };
}

/** A disk's retention policy with its defaults filled in, as every interface shows and takes it. */
export function retentionJson(disk: DiskRecord) {
  const p = policyOf(disk);
  return { keepLast: p.last, keepDaily: p.daily, keepWeekly: p.weekly, keepMonthly: p.monthly };
}

export function pointJson(p: RestorePointRecord) {
  return {
    id: p.id,
    diskId: p.diskId,
    runId: p.runId,
    kind: p.kind,
    /** When the disk looked like this: the one time of a point, in every view. */
    time: pointTimeIso(p),
    createdAt: p.createdAt,
    size: p.size,
    backupSnapshot: p.backupSnapshot,
    sourceSnapshot: p.sourceSnapshot,
    backupUrl: p.backupUrl,
    verifiedAt: p.verifiedAt,
    verifyResult: p.verifyResult,
    integrity: p.integrity,
  };
}
