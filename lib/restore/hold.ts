/**
 * A reader's hold on a restore point: restores (and verify) set the point row's `readingUntil`
 * before they read its backup snapshot, renew it while they read, and clear it when they finish;
 * retention keeps every point whose `readingUntil` is in the future. Guarantees:
 *
 * - the hold and retention's delete mark (`deletingSince`) are both written under the row's ETag,
 *   so exactly one of them wins a race: a hold taken first makes retention spare the point; a
 *   mark written first makes the hold fail with an InputError naming the point, before anything
 *   is read or created;
 * - several readers may hold one point: each only ever moves `readingUntil` later; a release
 *   leaves a value another reader wrote since, and otherwise puts back the hold it found when it
 *   started (if that one has not lapsed), so an earlier reader still reading stays covered;
 * - a reader that dies without releasing holds the point for at most READ_HOLD_MS.
 */
import { ConflictError, InputError } from "../core/errors";
import { messageOf } from "../core/errors";
import { retryOnConflict } from "../core/retry";
import type { Deps } from "../deps";
import type { RestorePointRecord } from "../lineage/types";

/**
 * How long one hold lasts without renewal. Renewed every third of it, so two failed renewals in
 * a row (a slow table, a paused process) still leave it standing; short enough that a crashed
 * restore delays retention of that one point by minutes, not days.
 */
export const READ_HOLD_MS = 10 * 60_000;
/** Guarded row updates retried when another writer (retention, verify, another reader) got there first. */
const ATTEMPTS = 8;

export interface PointHold {
  /** The time the hold currently lasts until. */
  readonly until: () => string;
  /** Stops renewing and clears the hold unless another reader extended it. Never throws. */
  release(): Promise<void>;
}

function refusal(point: RestorePointRecord, since: string): InputError {
  return new InputError([
    {
      field: "point",
      message: `restore point ${point.id} of disk ${point.diskId} is being deleted by retention (since ${since}); choose another`,
    },
  ]);
}

/** Moves the row's `readingUntil` to at least now + holdMs; returns what was written and what was there. */
async function extend(
  deps: Deps,
  point: RestorePointRecord,
  holdMs: number,
): Promise<{ until: string; found?: string }> {
  const now = deps.now;
  return retryOnConflict(ATTEMPTS, async () => {
    const current = await deps.lineage.getPoint(point.diskId, point.id);
    if (!current) {
      throw new InputError([
        { field: "point", message: `restore point ${point.id} of disk ${point.diskId} no longer exists` },
      ]);
    }
    if (current.deletingSince) throw refusal(point, current.deletingSince);
    const mine = new Date(now().getTime() + holdMs).toISOString();
    const until =
      current.readingUntil && Date.parse(current.readingUntil) > Date.parse(mine)
        ? current.readingUntil
        : mine;
    await deps.lineage.updatePoint({ ...current, readingUntil: until });
    return { until, found: current.readingUntil };
  });
}

/** Takes a hold on `point` for `reader` (a phrase for log lines, e.g. "restore to /tmp/x.img"). */
export async function holdPoint(
  deps: Deps,
  point: RestorePointRecord,
  reader: string,
  holdMs: number = READ_HOLD_MS,
): Promise<PointHold> {
  const now = deps.now;
  const first = await extend(deps, point, holdMs);
  let until = first.until;
  // Another reader's hold found when this one began; put back on release while it still runs.
  const before = first.found !== first.until ? first.found : undefined;
  let renewing: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    renewing = extend(deps, point, holdMs).then(
      (u) => {
        until = u.until;
      },
      (err) =>
        deps.log.warn(`${reader}: could not renew the hold on restore point ${point.id}: ${messageOf(err)}`),
    );
  }, holdMs / 3);
  // A hold must never keep a finished CLI process alive.
  timer.unref();
  return {
    until: () => until,
    release: async () => {
      clearInterval(timer);
      await renewing;
      try {
        for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
          const current = await deps.lineage.getPoint(point.diskId, point.id);
          // Gone, or extended by another reader: nothing of ours to clear.
          if (!current || current.readingUntil !== until) return;
          try {
            const other = before && Date.parse(before) > now().getTime() ? before : undefined;
            await deps.lineage.updatePoint({ ...current, readingUntil: other });
            return;
          } catch (err) {
            if (!(err instanceof ConflictError)) throw err;
          }
        }
      } catch (err) {
        deps.log.warn(
          `${reader}: could not release the hold on restore point ${point.id} (it lapses at ${until}): ${messageOf(err)}`,
        );
      }
    },
  };
}
