/**
 * Retention arithmetic, pure (no I/O, no clock: `now` is an argument). Given a disk's restore
 * points and its policy it says which points to keep and which to delete, each with its reasons,
 * with restic/borg semantics: keep the newest `last` points, plus the newest point of each of the
 * newest `daily` UTC days, `weekly` ISO weeks and `monthly` UTC months that hold a point (a bucket
 * without points is not counted, so a disk that was off for a week keeps as many weeklies). Every
 * point is either kept or deleted, never both. Guarantees that hold whatever the policy: the
 * newest point is always kept; a point a restore is reading (`readingUntil` after `now`) is
 * always kept; a pinned point (e.g. the disk's base point) is always kept. The result is
 * monotone: a point deleted at `now` is still deleted later with more points added (buckets only
 * move further back), so a crash halfway through deleting is repaired by applying again.
 */

export interface RetentionPolicy {
  /** The newest N points. */
  last: number;
  /** The newest point of each of the newest N UTC days that have points. */
  daily: number;
  /** The same per ISO-8601 week (Monday to Sunday, UTC). */
  weekly: number;
  /** The same per UTC calendar month. */
  monthly: number;
}

/** Issue 3: the last 14 (one week at 12 hours), no dailies, 4 weeklies and 12 monthlies. */
export const DEFAULT_POLICY: RetentionPolicy = { last: 14, daily: 0, weekly: 4, monthly: 12 };

/**
 * Upper bound of each count: retention lists every point of a disk on each apply, and 1000 rows
 * is one page of a table query; three years of dailies fit.
 */
export const MAX_RETAIN = 1000;

export interface RetentionCandidate {
  id: string;
  /** When the point captured the disk, ms since the epoch. */
  time: number;
  /** ISO time until which a restore reads this point. */
  readingUntil?: string;
}

export interface RetentionDecision {
  id: string;
  time: number;
  reasons: string[];
}

export interface RetentionPlan {
  /** Newest first. */
  keep: RetentionDecision[];
  /** Newest first. */
  delete: RetentionDecision[];
}

/** Checks one count; returns the problem, or undefined. `name` is how the caller's user spells it. */
export function checkRetainCount(name: string, value: unknown): string | undefined {
  const n = typeof value === "string" && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0 || n > MAX_RETAIN) {
    return `${name} ${String(value)} is not a whole number from 0 to ${MAX_RETAIN}`;
  }
  return undefined;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function dayKey(ms: number): string {
  return iso(ms).slice(0, 10);
}

function monthKey(ms: number): string {
  return iso(ms).slice(0, 7);
}

/** ISO-8601 week, e.g. 2026-W48; the week belongs to the year of its Thursday. */
export function isoWeekKey(ms: number): string {
  const d = new Date(ms);
  const dayFromMonday = (d.getUTCDay() + 6) % 7;
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - dayFromMonday + 3);
  const year = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - Date.UTC(year, 0, 1)) / 86_400_000 / 7) + 1;
  return `${year}-W${String(week).padStart(2, "0")}`;
}

export function planRetention(
  points: readonly RetentionCandidate[],
  policy: RetentionPolicy,
  now: Date,
  pinned: ReadonlyMap<string, string> = new Map(),
): RetentionPlan {
  for (const [name, value] of Object.entries(policy)) {
    const problem = checkRetainCount(name, value);
    if (problem) throw new Error(`retention policy: ${problem}`);
  }
  // Ties in time are ordered by id so the plan does not depend on the caller's order.
  const newestFirst = [...points].sort((a, b) => b.time - a.time || (a.id < b.id ? 1 : -1));
  const reasons = new Map<string, string[]>(newestFirst.map((p) => [p.id, []]));
  const buckets: Array<[string, number, (ms: number) => string]> = [
    ["daily", policy.daily, dayKey],
    ["weekly", policy.weekly, isoWeekKey],
    ["monthly", policy.monthly, monthKey],
  ];
  newestFirst.forEach((p, i) => {
    const why = reasons.get(p.id)!;
    if (i === 0) why.push("newest restore point");
    if (i < policy.last) why.push(`last ${policy.last} (#${i + 1})`);
    if (p.readingUntil && Date.parse(p.readingUntil) > now.getTime())
      why.push(`being read by a restore until ${p.readingUntil}`);
    const pin = pinned.get(p.id);
    if (pin) why.push(pin);
  });
  for (const [name, count, keyOf] of buckets) {
    let seen = 0;
    let lastKey: string | undefined;
    for (const p of newestFirst) {
      if (seen >= count) break;
      const key = keyOf(p.time);
      // Newest first, so the first point met in a bucket is that bucket's newest.
      if (key === lastKey) continue;
      lastKey = key;
      seen += 1;
      reasons.get(p.id)!.push(`${name} ${key}`);
    }
  }
  const plan: RetentionPlan = { keep: [], delete: [] };
  for (const p of newestFirst) {
    const why = reasons.get(p.id)!;
    if (why.length) plan.keep.push({ id: p.id, time: p.time, reasons: why });
    else plan.delete.push({ id: p.id, time: p.time, reasons: [deleteReason(policy)] });
  }
  return plan;
}

function deleteReason(policy: RetentionPolicy): string {
  return `outside the policy (last ${policy.last}, daily ${policy.daily}, weekly ${policy.weekly}, monthly ${policy.monthly})`;
}

/** A disk's effective policy: its own counts, the defaults for any it does not set. */
export function policyOf(disk: {
  retainLast?: number;
  retainDaily?: number;
  retainWeekly?: number;
  retainMonthly?: number;
}): RetentionPolicy {
  return {
    last: disk.retainLast ?? DEFAULT_POLICY.last,
    daily: disk.retainDaily ?? DEFAULT_POLICY.daily,
    weekly: disk.retainWeekly ?? DEFAULT_POLICY.weekly,
    monthly: disk.retainMonthly ?? DEFAULT_POLICY.monthly,
  };
}

/** E.g. "last 14, daily 0, weekly 4, monthly 12". */
export function describePolicy(policy: RetentionPolicy): string {
  return `last ${policy.last}, daily ${policy.daily}, weekly ${policy.weekly}, monthly ${policy.monthly}`;
}
