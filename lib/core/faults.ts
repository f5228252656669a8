/**
 * A plan of faults for the fault-injecting wrappers of the storage and lineage ports (FoundationDB's
 * simulation, in small): every operation of either port passes `enter` and `leave` in the order it
 * runs, gets a number 1, 2, 3, … and a name, and the plan can fail operation k with an error (the
 * operation does nothing), delay it, or crash the process after it (the operation took effect but
 * its caller never hears, and every later operation of this process fails as a dead process's
 * would). A run over the memory stores is deterministic, so operation k is the same operation on
 * every replay, and "for every k" enumerates every crash point.
 */

/** What a dead process sees: thrown by every operation once the plan has crashed. */
export class CrashError extends Error {
  constructor(readonly afterOperation: number) {
    super(`simulated crash after operation ${afterOperation}`);
    this.name = "CrashError";
  }
}

export interface FaultRule {
  /** Operation number (1-based) the rule applies to, or a test on the operation's name and number. */
  at: number | ((name: string, n: number) => boolean);
  /** Fail the operation with this error instead of doing it. */
  fail?: () => Error;
  /** Let the operation take effect, then crash. */
  crash?: boolean;
  /** Wait this long (ms) before doing it. */
  delayMs?: number;
  /** How many operations the rule applies to (default 1). */
  times?: number;
}

export class FaultPlan {
  /** Operations entered so far. */
  count = 0;
  /** The names of the operations, in order (for reports and for choosing crash points). */
  readonly names: string[] = [];
  private crashedAfter?: number;
  private readonly rules: Array<FaultRule & { left: number }> = [];

  add(rule: FaultRule): this {
    this.rules.push({ ...rule, left: rule.times ?? 1 });
    return this;
  }

  get crashed(): boolean {
    return this.crashedAfter !== undefined;
  }

  private match(name: string, n: number): (FaultRule & { left: number }) | undefined {
    const rule = this.rules.find(
      (r) => r.left > 0 && (typeof r.at === "number" ? r.at === n : r.at(name, n)),
    );
    if (rule) rule.left--;
    return rule;
  }

  /** Runs one operation under the plan. */
  async run<T>(name: string, op: () => Promise<T>): Promise<T> {
    if (this.crashedAfter !== undefined) throw new CrashError(this.crashedAfter);
    const n = ++this.count;
    this.names.push(name);
    const rule = this.match(name, n);
    if (rule?.delayMs) await new Promise((r) => setTimeout(r, rule.delayMs));
    if (rule?.fail) throw rule.fail();
    const result = await op();
    if (rule?.crash) this.crashedAfter = n;
    if (this.crashedAfter !== undefined) throw new CrashError(this.crashedAfter);
    return result;
  }
}

/** Wraps every method of `target` so each call runs under `plan`, named `<prefix>.<method>`. */
export function underPlan<T extends object>(target: T, plan: FaultPlan, prefix: string): T {
  return new Proxy(target, {
    get(obj, prop, receiver) {
      const value = Reflect.get(obj, prop, receiver) as unknown;
      if (typeof value !== "function" || typeof prop !== "string") return value;
      return (...args: unknown[]) =>
        plan.run(`${prefix}.${prop}`, () =>
          (value as (...a: unknown[]) => Promise<unknown>).apply(obj, args),
        );
    },
  });
}

/** A transient failure as the services answer one (503 ServerBusy), for fault rules. */
export function transientError(): Error {
  return Object.assign(new Error("injected: the service is busy"), { statusCode: 503, code: "ServerBusy" });
}
