/**
 * The one writer of run rows. A RunTracker holds the current run record of the invocation that
 * owns the run and writes every change of it through one queue, under the ETag of the previous
 * write, so heartbeats and checkpoints never overwrite each other. A ConflictError means another
 * process took the run over: the tracker turns it into LostRunError and every later write fails
 * the same way, so the run stops without touching anything else. `guardedRunUpdate` is the same
 * rule for an invocation that does not own the run (a chunk worker extending the lease, the one
 * that moves it to sealing, a poison message failing it): read, decide, write under the ETag.
 *
 * `defer` records a change that need not be written on its own (the run's final checkpoint, the
 * detection it chose): it is part of `current` at once and goes out with the next write, which
 * always follows (the run's end, its pause, its seal). Lost in a crash, it is only what a resumed
 * run decides or lists again; it saves a table write per run.
 */
import { ConflictError } from "../core/errors";
import type { Lineage, RunRecord } from "../lineage/types";
import { leaseFrom } from "./claim";

export class LostRunError extends Error {
  constructor(runId: string) {
    super(`run ${runId} was taken over by another process; this one stops`);
    this.name = "LostRunError";
  }
}

export class RunTracker {
  private queue: Promise<unknown> = Promise.resolve();
  private lost = false;
  private heartbeat?: NodeJS.Timeout;
  /** The row as last written (or read). */
  private stored: RunRecord;
  /** Deferred changes, not written yet. */
  private pending: Partial<RunRecord> = {};

  constructor(
    private readonly lineage: Lineage,
    current: RunRecord,
    private readonly leaseSeconds: number,
    private readonly now: () => Date,
  ) {
    this.stored = current;
  }

  /** The run as this invocation knows it: the row, with the deferred changes. */
  get current(): RunRecord {
    return { ...this.stored, ...this.pending };
  }

  /** Makes `patch` part of the run now; it is written with the next update. */
  defer(patch: Partial<RunRecord>): void {
    Object.assign(this.pending, patch);
  }

  update(patch: Partial<RunRecord>): Promise<RunRecord> {
    const next = this.queue.then(async () => {
      if (this.lost) throw new LostRunError(this.stored.id);
      const now = this.now();
      const sent = { ...this.pending };
      const record: RunRecord = {
        ...this.stored,
        ...sent,
        ...patch,
        updatedAt: now.toISOString(),
        leaseUntil: leaseFrom(now, this.leaseSeconds),
      };
      try {
        this.stored = await this.lineage.updateRun(record);
        // What was deferred meanwhile stays pending; what this write carried is written.
        for (const [k, v] of Object.entries(sent) as Array<[keyof RunRecord, unknown]>) {
          if (this.pending[k] === v) delete this.pending[k];
        }
      } catch (err) {
        if (err instanceof ConflictError) {
          this.lost = true;
          throw new LostRunError(this.stored.id);
        }
        throw err;
      }
      return this.current;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Renews the lease three times per lease period. It carries no counters: the counters on the row
   * are those of the last checkpoint, exactly what lies below it, so a run resumed from there
   * counts as one never interrupted would.
   */
  startHeartbeat(): void {
    const period = Math.max(1000, (this.leaseSeconds * 1000) / 3);
    this.heartbeat = setInterval(() => {
      this.update({}).catch(() => undefined);
    }, period);
    this.heartbeat.unref();
  }

  stop(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
  }

  get isLost(): boolean {
    return this.lost;
  }
}

/**
 * Writes `decide(current)` over run `runId` under the ETag it was read with, again on a conflict
 * (bounded). `decide` returns undefined to write nothing (the run moved on). Returns what was
 * written, or undefined.
 */
export async function guardedRunUpdate(
  lineage: Lineage,
  diskId: string,
  runId: string,
  decide: (current: RunRecord) => Partial<RunRecord> | undefined,
  attempts = 5,
): Promise<RunRecord | undefined> {
  for (let pass = 0; pass < attempts; pass++) {
    const current = await lineage.getRun(diskId, runId);
    if (!current) return undefined;
    const patch = decide(current);
    if (!patch) return undefined;
    try {
      return await lineage.updateRun({ ...current, ...patch });
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
    }
  }
  return undefined;
}
