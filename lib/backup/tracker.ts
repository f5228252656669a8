/**
 * Holds the current run record and writes every change of it through one queue, under the ETag
 * of the previous write, so heartbeats and progress never overwrite each other. A ConflictError
 * means another process took the run over: the tracker turns it into LostRunError and every
 * later write fails the same way, so the run stops without touching anything else.
 */
import { ConflictError, type Lineage, type RunRecord } from "../lineage/types";
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

  constructor(
    private readonly lineage: Lineage,
    public current: RunRecord,
    private readonly leaseSeconds: number,
    private readonly now: () => Date,
  ) {}

  update(patch: Partial<RunRecord>): Promise<RunRecord> {
    const next = this.queue.then(async () => {
      if (this.lost) throw new LostRunError(this.current.id);
      const now = this.now();
      const record: RunRecord = {
        ...this.current,
        ...patch,
        updatedAt: now.toISOString(),
        leaseUntil: leaseFrom(now, this.leaseSeconds),
      };
      try {
        this.current = await this.lineage.updateRun(record);
      } catch (err) {
        if (err instanceof ConflictError) {
          this.lost = true;
          throw new LostRunError(this.current.id);
        }
        throw err;
      }
      return this.current;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Renews the lease three times per lease period, carrying the latest counters to the run row. */
  startHeartbeat(counters: () => Partial<RunRecord>): void {
    const period = Math.max(1000, (this.leaseSeconds * 1000) / 3);
    this.heartbeat = setInterval(() => {
      this.update(counters()).catch(() => undefined);
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
