/**
 * The backup timer: on each tick, every disk that is due gets one backup request. Guarantees: due-ness
 * is computed from the disk's last success (never from counting ticks), so a past-due tick after an
 * outage queues one backup per disk, not one per missed window; a disk's own `intervalMinutes`
 * overrides the schedule's interval; a disk whose run is still active is skipped with a log line
 * naming that run; one disk's failure is logged and never stops the others. `nextDueAt` and
 * `isStale` use the same arithmetic, so what GET /api/disks reports is what the timer will do.
 */
import { parseSchedule, type Schedule } from "../config/schedule";
import { forEachBounded } from "../core/concurrency";
import { BusyError } from "../core/errors";
import type { Logger } from "../core/logger";
import { pointTimeIso, type DiskRecord } from "../lineage/types";
import { requestBackup } from "./backups";
import type { App } from "./context";
import type { DiskStatus, DiskTickAction, TimerSummary } from "./timerReport";

export type { DiskStatus, DiskTickAction, TimerSummary, TimerTickReport } from "./timerReport";

/** What the timer trigger hands over (the Functions host's Timer, or the local host's). */
export interface Timer {
  isPastDue: boolean;
  scheduleStatus?: { last?: string; next?: string; lastUpdated?: string } | null;
}

const MINUTE_MS = 60 * 1000;

/**
 * A disk counts as due this much before its interval has fully passed. `lastSuccessAt` is when the
 * previous run *finished*, so without slack a backup that took 10 minutes would be 11 h 50 min old
 * at the next 12-hour tick and slip a whole window. A tenth of the interval (72 min on the default
 * schedule) covers any sane backup duration and the host firing a tick a little late.
 */
export const DUE_SLACK_FRACTION = 0.1;

/**
 * The slack never reaches half a tick of the schedule: slack of a whole tick or more would make a
 * disk due one tick early, and its backups would creep earlier every cycle.
 */
const SLACK_MAX_TICK_FRACTION = 0.5;

/**
 * Backup requests queued at once. Each is a few table operations and one queue message, so a
 * handful in parallel keeps a tick with hundreds of disks to seconds without bursting the lineage
 * table with writes.
 */
const REQUEST_CONCURRENCY = 8;

/** Staleness threshold in intervals: a missed window is normal (a failed run is retried next tick), two are not. */
export const STALE_INTERVALS = 2;

function scheduleOf(schedule: string | Schedule): Schedule {
  return typeof schedule === "string" ? parseSchedule(schedule) : schedule;
}

/** A time from the lineage, or undefined when absent or unreadable (treated as "never"). */
function timeOf(value: string | Date | undefined): number | undefined {
  if (value === undefined) return undefined;
  const t = value instanceof Date ? value.getTime() : Date.parse(value);
  return Number.isFinite(t) ? t : undefined;
}

/** The disk's backup interval in milliseconds: its own `intervalMinutes`, else the schedule's typical gap. */
export function intervalMsOf(disk: DiskRecord, schedule: string | Schedule): number {
  const own = disk.intervalMinutes;
  if (own !== undefined && Number.isFinite(own) && own > 0) return own * MINUTE_MS;
  return scheduleOf(schedule).intervalMs;
}

function slackMs(intervalMs: number, schedule: Schedule): number {
  return Math.min(intervalMs * DUE_SLACK_FRACTION, schedule.intervalMs * SLACK_MAX_TICK_FRACTION);
}

/** From when the disk is due; undefined when it has never succeeded (due at once). */
function dueFrom(disk: DiskRecord, schedule: Schedule): number | undefined {
  const last = timeOf(disk.lastSuccessAt);
  if (last === undefined) return undefined;
  const interval = intervalMsOf(disk, schedule);
  return last + interval - slackMs(interval, schedule);
}

export function isDue(disk: DiskRecord, schedule: string | Schedule, now: Date): boolean {
  const from = dueFrom(disk, scheduleOf(schedule));
  return from === undefined || now.getTime() >= from;
}

/** The disks a tick at `now` backs up: never succeeded, or last success at least (interval − slack) ago. */
export function dueDisks(disks: DiskRecord[], schedule: string | Schedule, now: Date): DiskRecord[] {
  const parsed = scheduleOf(schedule);
  return disks.filter((disk) => isDue(disk, parsed, now));
}

/**
 * The tick at which the timer will next request a backup of this disk: the first occurrence of the
 * schedule after `now` at which the disk is due. A disk that is already due goes at the next tick.
 */
export function nextDueAt(disk: DiskRecord, schedule: string | Schedule, now: Date): Date {
  const parsed = scheduleOf(schedule);
  const from = dueFrom(disk, parsed) ?? now.getTime();
  // Occurrences are whole milliseconds, so "strictly after from − 1 ms" is "at or after from".
  return parsed.next(new Date(Math.max(now.getTime(), from - 1)));
}

/**
 * True when the disk was last proved protected more than twice its interval ago: its newest
 * restore point, or a later backup that found nothing changed (that run proved the newest point
 * still equals the disk), is that old — at least two windows were missed. A disk without any point
 * is stale once it has been registered that long.
 */
export function isStale(
  disk: DiskRecord,
  newestPointTime: string | Date | undefined,
  schedule: string | Schedule,
  now: Date,
): boolean {
  const point = timeOf(newestPointTime);
  const success = point === undefined ? undefined : timeOf(disk.lastSuccessAt);
  const reference = point === undefined ? timeOf(disk.createdAt) : Math.max(point, success ?? point);
  if (reference === undefined) return true;
  return now.getTime() - reference > STALE_INTERVALS * intervalMsOf(disk, schedule);
}

/**
 * The newest restore point's time of each disk, read as GET /api/disks reads it. A disk whose read
 * fails falls back to its last success (a run's point is taken before it finishes, so this can
 * only make the disk look fresher by one run's duration), so one unreadable row never drops a
 * disk from the status report.
 */
async function newestPointTimes(app: App, disks: DiskRecord[]): Promise<Map<string, string | undefined>> {
  const times = new Map<string, string | undefined>();
  await forEachBounded(disks, REQUEST_CONCURRENCY, async (disk) => {
    try {
      const [newest] = await app.lineage.listPoints(disk.id, 1);
      times.set(disk.id, newest ? pointTimeIso(newest) : undefined);
    } catch {
      times.set(disk.id, disk.lastSuccessAt);
    }
  });
  return times;
}

/** Each disk's status after a tick: interval, newest point, `isStale`, and what the tick did. */
export function diskStatuses(
  disks: DiskRecord[],
  newest: Map<string, string | undefined>,
  summary: TimerSummary,
  schedule: Schedule,
  now: Date,
): DiskStatus[] {
  const queued = new Map(summary.queued.map((q) => [q.diskId, q.runId]));
  const busy = new Map(summary.skipped.map((s) => [s.diskId, s.activeRunId]));
  const failed = new Set(summary.failed.map((f) => f.diskId));
  return disks.map((disk) => {
    const newestPointAt = newest.get(disk.id);
    const pointMs = newestPointAt === undefined ? undefined : Date.parse(newestPointAt);
    const action: DiskTickAction = queued.has(disk.id)
      ? "queued"
      : busy.has(disk.id)
        ? "busy"
        : failed.has(disk.id)
          ? "failed"
          : "notDue";
    const intervalMs = intervalMsOf(disk, schedule);
    return {
      diskId: disk.id,
      intervalMinutes: Math.round(intervalMs / MINUTE_MS),
      newestPointAt,
      newestPointAgeMinutes:
        pointMs === undefined || !Number.isFinite(pointMs)
          ? undefined
          : Math.max(0, Math.round((now.getTime() - pointMs) / MINUTE_MS)),
      staleAfterMinutes: Math.round((STALE_INTERVALS * intervalMs) / MINUTE_MS),
      stale: isStale(disk, newestPointAt, schedule, now),
      lastSuccessAt: disk.lastSuccessAt,
      action,
      runId: queued.get(disk.id) ?? busy.get(disk.id),
    };
  });
}

/**
 * One tick: requests a backup of every due disk. Throws only when the schedule is invalid or the
 * disks cannot be listed; per-disk problems are logged and counted in the summary. With a
 * `timerTicked` hook (telemetry), it then reports every disk's status and the tick itself: the
 * newest points are read alongside the requests, never before them, and the hook is synchronous
 * and guarded, so reporting neither delays nor fails the tick.
 */
export async function onTimer(app: App, timer: Timer, log: Logger): Promise<TimerSummary> {
  const now = (app.now ?? (() => new Date()))();
  let schedule: Schedule;
  try {
    schedule = parseSchedule(app.config.schedule);
  } catch (err) {
    throw new Error(`DISKDELTA_SCHEDULE: ${(err as Error).message}`, { cause: err });
  }
  if (timer.isPastDue) {
    // No loop over missed ticks: due-ness comes from each disk's last success, so one catch-up
    // tick queues each overdue disk once however many windows it missed.
    const last = timer.scheduleStatus?.last;
    log.warn(`timer is past due${last ? ` (last tick ${last})` : ""}: catching up once for overdue disks`);
  }
  const disks = await app.lineage.listDisks();
  const due = dueDisks(disks, schedule, now);
  const summary: TimerSummary = { disks: disks.length, due: due.length, queued: [], skipped: [], failed: [] };
  const report = app.timerTicked;
  // Started now and awaited after the requests: the reads overlap the queuing. Never rejects.
  const newest = report ? newestPointTimes(app, disks) : undefined;
  await forEachBounded(due, REQUEST_CONCURRENCY, async (disk) => {
    try {
      const run = await requestBackup(app, disk.id, "timer");
      summary.queued.push({ diskId: disk.id, runId: run.id });
    } catch (err) {
      if (err instanceof BusyError) {
        log.warn(
          `skipped disk ${disk.id}: run ${err.activeRunId} still active (held by ${err.holder} until ${err.until})`,
        );
        summary.skipped.push({ diskId: disk.id, activeRunId: err.activeRunId });
        return;
      }
      const message = err instanceof Error ? err.message : String(err);
      log.error(`disk ${disk.id}: could not request a backup: ${message}`);
      summary.failed.push({ diskId: disk.id, error: message });
    }
  });
  log.info(
    `timer at ${now.toISOString()}: ${summary.due} of ${summary.disks} disks due; queued ${summary.queued.length}, ` +
      `skipped ${summary.skipped.length} (active run), failed ${summary.failed.length}`,
  );
  if (report && newest) {
    try {
      report({
        at: now.toISOString(),
        pastDue: timer.isPastDue,
        summary,
        statuses: diskStatuses(disks, await newest, summary, schedule, now),
      });
    } catch (err) {
      log.warn(`timerTicked did not complete: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return summary;
}
