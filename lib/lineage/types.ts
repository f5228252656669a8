/**
 * The lineage records: disks, runs and restore points. These shapes are the contract between the
 * backup engine, the CLI, the Functions app and the table store. Times are ISO-8601 strings;
 * snapshot ids are the service's snapshot timestamps. No record ever holds a credential.
 */

export type RunKind = "full" | "incremental" | "resync";
export type RunState = "planned" | "copying" | "sealing" | "succeeded" | "failed";
export type RunTrigger = "cli" | "timer" | "http" | "queue" | "restore";
/** How the change set was found: the service's page-range diff, a compare of source and backup, or the valid ranges of a first copy. */
export type Detection = "service-diff" | "compare" | "valid-ranges";

export const TERMINAL_STATES: readonly RunState[] = ["succeeded", "failed"];

export interface DiskRecord {
  id: string;
  /** The protected page blob, as registered (no SAS, no key). */
  sourceUrl: string;
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
  verifiedAt?: string;
  verifyResult?: string;
  /** Where this point's per-window digests are kept (issue 3, verify). */
  digestsUrl?: string;
  /** A restore reading this point holds it until this time; retention must not delete it before. */
  readingUntil?: string;
  /** Set by retention, under the row's ETag, before it deletes this point; a restore refuses a point so marked. */
  deletingSince?: string;
  etag?: string;
}

/** Thrown when a disk already has an active run whose lease still holds. */
export class BusyError extends Error {
  constructor(
    readonly diskId: string,
    readonly activeRunId: string,
    readonly owner: string,
    readonly leaseUntil: string,
  ) {
    super(
      `disk ${diskId} is busy: run ${activeRunId} is active (owner ${owner}, lease until ${leaseUntil}); ` +
        `wait for it to finish or check it with 'diskdelta runs ${diskId}'`,
    );
    this.name = "BusyError";
  }
}

export class NotFoundError extends Error {
  constructor(what: string) {
    super(what);
    this.name = "NotFoundError";
  }
}

/** Another writer changed the row since it was read (ETag mismatch). */
export class ConflictError extends Error {
  constructor(what: string) {
    super(what);
    this.name = "ConflictError";
  }
}

/**
 * Runs `attempt` (read a row, decide, write it under the ETag it was read with) again while it
 * fails with a ConflictError, at most `attempts` times in all; then the conflict is rethrown.
 * Any other error is rethrown at once.
 */
export async function retryOnConflict<T>(attempts: number, attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof ConflictError) || n >= attempts) throw err;
    }
  }
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
}
