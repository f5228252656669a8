/**
 * What a timer tick did, as data: the summary of requests, each disk's status (the numbers behind
 * GET /api/disks' `intervalMinutes` and `stale`), and the report the `timerTicked` hook
 * (telemetry) receives. Types only, shared by the timer and the app's context.
 */

export interface TimerSummary {
  /** Disks examined, and how many of them were due. */
  disks: number;
  due: number;
  queued: { diskId: string; runId: string }[];
  skipped: { diskId: string; activeRunId: string }[];
  failed: { diskId: string; error: string }[];
}

/** What a tick did with one disk. */
export type DiskTickAction = "queued" | "busy" | "failed" | "notDue";

/**
 * One disk as a tick saw it: the numbers behind GET /api/disks' `intervalMinutes` and `stale`, by
 * the same functions and the same kind of input (the newest restore point's time), at the tick's
 * `now`. The stale-restore-point alert reads these (lib/telemetry.ts DISK_STATUS_EVENT).
 */
export interface DiskStatus {
  diskId: string;
  intervalMinutes: number;
  /** The newest restore point's time; undefined when the disk has none. */
  newestPointAt?: string;
  newestPointAgeMinutes?: number;
  /** STALE_INTERVALS × intervalMinutes: the age past which `stale` is true. */
  staleAfterMinutes: number;
  stale: boolean;
  lastSuccessAt?: string;
  action: DiskTickAction;
  /** The run queued by this tick, or the active run that made it skip the disk. */
  runId?: string;
}

/** A completed tick, for the `timerTicked` hook (telemetry): sent only when the disks were listed. */
export interface TimerTickReport {
  at: string;
  pastDue: boolean;
  summary: TimerSummary;
  statuses: DiskStatus[];
}
