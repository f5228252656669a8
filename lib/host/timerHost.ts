/**
 * The timer trigger as the Functions host runs it: each timer function fires on its NCRONTAB
 * schedule (`%SETTING%` read from the environment, as app settings are), with a Timer object
 * carrying the schedule status. Guarantees: a schedule that cannot be read stops the start with
 * its error; invocations of one timer never overlap (the next occurrence is computed after an
 * invocation ends, so a slow one skips, never queues, missed occurrences); the status (last, next,
 * lastUpdated) is kept per function in a small JSON file, so a host started after an occurrence it
 * missed fires once with isPastDue=true — once, however many were missed — then keeps the
 * schedule. A failing invocation is logged; the schedule goes on. `stop()` cancels what has not
 * started and waits for what has.
 */
import fs from "node:fs";
import path from "node:path";
import type { Timer } from "@azure/functions";
import type { TimerFunctionSpec } from "../app/register";
import { parseSchedule, type Schedule } from "../config/schedule";
import { errorText, newContext, type HostLogger } from "./invocation";

/** The longest delay setTimeout takes (about 24.8 days); longer waits are re-armed. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export interface ScheduleStatus {
  last: string;
  next: string;
  lastUpdated: string;
}

export interface TimerHostOptions {
  /** Where the schedule status is kept (the Functions host keeps it in the app storage). */
  statusFile: string;
  env?: NodeJS.ProcessEnv;
  /** Now, for tests that start the host at a chosen instant. */
  now?: () => Date;
}

/** `%NAME%` → the app setting NAME, as the host resolves binding expressions. */
export function resolveSchedule(schedule: string, env: NodeJS.ProcessEnv): string {
  const m = /^%([^%]+)%$/.exec(schedule.trim());
  if (!m) return schedule;
  const value = env[m[1]]?.trim();
  if (!value) throw new Error(`the timer schedule names app setting ${m[1]}, which is not set`);
  return value;
}

export class TimerHost {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly running = new Set<Promise<void>>();
  private readonly schedules = new Map<string, Schedule>();
  private stopped = false;
  private readonly now: () => Date;

  constructor(
    private readonly specs: TimerFunctionSpec[],
    private readonly options: TimerHostOptions,
    private readonly log: HostLogger,
  ) {
    this.now = options.now ?? (() => new Date());
    const env = options.env ?? process.env;
    for (const spec of specs) {
      try {
        this.schedules.set(spec.name, parseSchedule(resolveSchedule(spec.schedule, env)));
      } catch (err) {
        throw new Error(`timer ${spec.name}: ${errorText(err)}`);
      }
    }
  }

  /** Each timer's next occurrence, for the startup log. */
  nextRuns(): { name: string; schedule: string; next: Date }[] {
    return this.specs.map((s) => ({
      name: s.name,
      schedule: this.schedules.get(s.name)!.expression,
      next: this.schedules.get(s.name)!.next(this.now()),
    }));
  }

  start(): void {
    const statuses = this.readStatuses();
    for (const spec of this.specs) {
      const schedule = this.schedules.get(spec.name)!;
      const status = statuses[spec.name];
      const now = this.now();
      if (status && Date.parse(status.next) <= now.getTime()) {
        this.log.info(
          `timer ${spec.name} missed ${status.next} while the host was down; firing once, past due`,
        );
        this.fire(spec, schedule, status, true);
      } else {
        if (!status || status.next !== schedule.next(now).toISOString()) {
          // Recorded now, so that an occurrence missed before the next start is noticed.
          const fresh = {
            last: status?.last ?? now.toISOString(),
            next: schedule.next(now).toISOString(),
            lastUpdated: now.toISOString(),
          };
          this.writeStatus(spec.name, fresh);
        }
        this.arm(spec, schedule);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    while (this.running.size) await Promise.allSettled([...this.running]);
  }

  private arm(spec: TimerFunctionSpec, schedule: Schedule): void {
    if (this.stopped) return;
    const due = schedule.next(this.now());
    const wait = () => {
      const left = due.getTime() - this.now().getTime();
      if (left > 0) {
        this.timers.set(spec.name, setTimeout(wait, Math.min(left, MAX_TIMEOUT_MS)));
        return;
      }
      const status = this.readStatuses()[spec.name];
      this.fire(spec, schedule, status, false, due);
    };
    wait();
  }

  private fire(
    spec: TimerFunctionSpec,
    schedule: Schedule,
    status: ScheduleStatus | undefined,
    isPastDue: boolean,
    occurrence = this.now(),
  ): void {
    if (this.stopped) return;
    const now = this.now();
    const timer: Timer = {
      isPastDue,
      schedule: { adjustForDST: false },
      scheduleStatus: {
        last: status?.last ?? now.toISOString(),
        next: schedule.next(now).toISOString(),
        lastUpdated: status?.lastUpdated ?? now.toISOString(),
      },
    };
    const context = newContext(spec.name, this.log, {
      triggerMetadata: { timer },
      options: { trigger: { type: "timerTrigger", name: "timer", schedule: schedule.expression } },
    });
    const run = (async () => {
      try {
        await spec.handler(timer, context);
      } catch (err) {
        context.error(`failed: ${errorText(err)}`);
      }
      // The status moves on whether or not the invocation succeeded, as the host's does.
      const after = this.now();
      this.writeStatus(spec.name, {
        last: occurrence.toISOString(),
        next: schedule.next(after).toISOString(),
        lastUpdated: after.toISOString(),
      });
      this.arm(spec, schedule);
    })();
    this.running.add(run);
    void run.finally(() => this.running.delete(run));
  }

  private readStatuses(): Record<string, ScheduleStatus> {
    try {
      return JSON.parse(fs.readFileSync(this.options.statusFile, "utf8")) as Record<string, ScheduleStatus>;
    } catch {
      // Missing or unreadable: as on a first start, nothing is past due.
      return {};
    }
  }

  private writeStatus(name: string, status: ScheduleStatus): void {
    const file = this.options.statusFile;
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const all = { ...this.readStatuses(), [name]: status };
      // Written whole then renamed, so a crash mid-write never leaves a half file.
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify(all, null, 2));
      fs.renameSync(tmp, file);
    } catch (err) {
      this.log.warn(`timer ${name}: cannot record its schedule status in ${file}: ${errorText(err)}`);
    }
  }
}
