/**
 * The lineage records: disks, runs and restore points. These shapes are the contract between the
 * backup engine, the CLI, the Functions app and the table store. Times are ISO-8601 strings;
 * snapshot ids are the service's snapshot timestamps. No record ever holds a credential.
 */
export { BusyError, ConflictError, NotFoundError, retryOnConflict } from "../core";

export type RunKind = "full" | "incremental" | "resync";
/**
 * planned → copying → sealing → succeeded, or → failed; a run that found nothing changed ends
 * `unchanged` (recorded in the history, no new restore point).
 */
export type RunState = "planned" | "copying" | "sealing" | "succeeded" | "failed" | "unchanged";
export type RunTrigger = "cli" | "timer" | "http" | "queue" | "restore";
/** How the change set was found: the service's page-range diff, a compare of source and backup, or the valid ranges of a first copy. */
export type Detection = "service-diff" | "compare" | "valid-ranges";

export const TERMINAL_STATES: readonly RunState[] = ["succeeded", "failed", "unchanged"];

export function isTerminal(state: RunState): boolean {
  return TERMINAL_STATES.includes(state);
}

export interface DiskRecord {
  id: string;
  /** The protected page blob, as registered (no SAS, no key); for a managed disk, its resource id too. */
  sourceUrl: string;
  /** The ARM resource id of the protected managed disk; absent for a page blob. */
  sourceDiskId?: string;
  /** Service URL of the backup account, e.g. https://acct.blob.core.windows.net or http://127.0.0.1:10000/acct */
  backupAccountUrl: string;
  backupContainer: string;
  backupBlob: string;
  createdAt: string;
  /** Snapshot id of the base: the newest source snapshot whose copy is sealed. Absent before the first seal. */
  baseSnapshot?: string;
  /** Size of the disk at the base. */
  baseSize?: number;
  /** Id of the restore point sealed from the base. */
  basePoint?: string;
  /**
   * The backup blob's sequence number when the base point was sealed (the fence of the run that
   * sealed it). While the blob still carries it, no run has written the blob since: a run that then
   * finds nothing changed may say "unchanged" without a new point.
   */
  baseFence?: number;
  /** The run holding the disk's lock, if any. */
  activeRunId?: string;
  lastRunId?: string;
  lastSuccessAt?: string;
  /** Backup interval of this disk in minutes; absent means the app's schedule (DISKDELTA_SCHEDULE). */
  intervalMinutes?: number;
  /** Retention policy (issue 3): keep the last N restore points, plus daily, weekly and monthly ones. */
  retainLast?: number;
  retainDaily?: number;
  retainWeekly?: number;
  retainMonthly?: number;
  /** Table ETag of the row this record was read from; needed for guarded updates. */
  etag?: string;
}

export interface RunRecord {
  id: string;
  diskId: string;
  trigger: RunTrigger;
  kind: RunKind;
  detection?: Detection;
  state: RunState;
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
  /** Who runs it (host:pid), and until when its claim holds; a run whose lease lapsed may be taken over. */
  owner: string;
  leaseUntil: string;
  /** The source snapshot this run copies, once taken. */
  sourceSnapshot?: string;
  /** When the source snapshot was taken, where its id is not that time (a managed disk's snapshot). */
  sourceCapturedAt?: string;
  /** The base it diffs from (absent for a full run). */
  baseSnapshot?: string;
  sourceSize?: number;
  rangesWritten: number;
  rangesCleared: number;
  chunksTotal: number;
  chunksDone: number;
  bytesPlanned: number;
  bytesCopied: number;
  bytesCleared: number;
  /** Disk offset below which this run's changes are applied to the backup blob (inline) or planned (fan-out); a resumed run starts here. */
  checkpoint?: number;
  /** "inline": copied by the invocation that planned it; "fanout": chunk batches on the chunk queue. */
  mode?: "inline" | "fanout";
  /** Fan-out: chunk batches enqueued so far, and "yes" once planning has finished. */
  batchesTotal?: number;
  planComplete?: "yes";
  /** Fan-out: incremented by every planning invocation; batches numbered from `generationStart` on belong to it. */
  planGeneration?: number;
  generationStart?: number;
  /**
   * The backup blob's sequence number while this run writes it: set before the first write, and
   * every write is conditional on it, so a straggling write of an earlier run is refused.
   */
  fence?: number;
  /** Snapshot id of the backup blob taken by the seal. */
  backupSnapshot?: string;
  restorePoint?: string;
  /** Why the run became a resync, or why it failed. */
  reason?: string;
  error?: string;
  etag?: string;
}

export interface RestorePointRecord {
  id: string;
  diskId: string;
  runId: string;
  kind: RunKind;
  /** Snapshot of the backup blob that holds this restore point. */
  backupSnapshot: string;
  backupUrl: string;
  /** The source snapshot it is a copy of (may be deleted later; it is no longer the base then). */
  sourceSnapshot: string;
  size: number;
  createdAt: string;
  /** When the source snapshot was taken, where its id is not that time (a managed disk's snapshot is a resource id). */
  capturedAt?: string;
  verifiedAt?: string;
  verifyResult?: string;
  /** Where this point's per-window digests are kept (issue 3, verify). */
  digestsUrl?: string;
  /**
   * "failed" once a verify or a restore found the point's bytes differ from what they must be; a
   * restore then refuses it unless asked to read a damaged point on purpose.
   */
  integrity?: "ok" | "failed";
  /** A restore reading this point holds it until this time; retention must not delete it before. */
  readingUntil?: string;
  /** Set by retention, under the row's ETag, before it deletes this point; a restore refuses a point so marked. */
  deletingSince?: string;
  etag?: string;
}

/** The lineage store. Guarantees: partition per disk; runs and points listed newest first; every update of an existing row is conditional on the ETag it was read with, and fails with ConflictError otherwise. */
export interface Lineage {
  /** Creates tables if missing (a no-op when they exist). */
  ensureTables(): Promise<void>;
  addDisk(disk: DiskRecord): Promise<DiskRecord>; // ConflictError("disk X exists") when present
  getDisk(id: string): Promise<DiskRecord | undefined>;
  listDisks(): Promise<DiskRecord[]>;
  /** Replace the disk row if its ETag still matches `disk.etag`; returns the row with its new ETag. */
  updateDisk(disk: DiskRecord): Promise<DiskRecord>;
  addRun(run: RunRecord): Promise<RunRecord>;
  getRun(diskId: string, runId: string): Promise<RunRecord | undefined>;
  updateRun(run: RunRecord): Promise<RunRecord>;
  listRuns(diskId: string, limit?: number): Promise<RunRecord[]>;
  addPoint(point: RestorePointRecord): Promise<RestorePointRecord>;
  getPoint(diskId: string, pointId: string): Promise<RestorePointRecord | undefined>;
  updatePoint(point: RestorePointRecord): Promise<RestorePointRecord>;
  listPoints(diskId: string, limit?: number): Promise<RestorePointRecord[]>;
  deletePoint(diskId: string, pointId: string): Promise<void>;
  /**
   * Fan-out completion: counts batch `batch` of planner generation `generation` of a run once,
   * with its copied bytes and chunks; false when it was counted before (a redelivered batch). A
   * count and its marker are written together (one transaction), so a crash never leaves one
   * without the other.
   */
  countBatch(diskId: string, runId: string, batch: BatchId, counts: BatchCounts): Promise<boolean>;
  /** The sums of every batch counted for a run so far. */
  batchProgress(diskId: string, runId: string): Promise<BatchProgress>;
}

export interface BatchId {
  generation: number;
  batch: number;
}

export interface BatchCounts {
  bytesCopied: number;
  chunksDone: number;
}

export interface BatchProgress extends BatchCounts {
  /** Batches counted. */
  batches: number;
}

/**
 * When a restore point's disk state was captured, in ms since the epoch: the time of the source
 * snapshot it was copied from (the instant the disk looked like that), falling back to the seal
 * time where the snapshot id is not a time (a managed disk's snapshot is a resource id). Every
 * view (points, prune, restore, the API) shows this one time.
 */
export function pointTime(
  point: Pick<RestorePointRecord, "sourceSnapshot" | "createdAt" | "capturedAt">,
): number {
  const captured = Date.parse(point.capturedAt ?? point.sourceSnapshot);
  return Number.isFinite(captured) ? captured : Date.parse(point.createdAt);
}

export function pointTimeIso(
  point: Pick<RestorePointRecord, "sourceSnapshot" | "createdAt" | "capturedAt">,
): string {
  return new Date(pointTime(point)).toISOString();
}
