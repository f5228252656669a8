/**
 * Retention arithmetic on synthetic UTC timelines: what each bucket keeps, that the newest point
 * and points being read always stay, that every point is kept or deleted exactly once, and that
 * the plan is monotone (a point deleted now stays deleted as time goes on), which is what makes an
 * interrupted apply repairable by the next one.
 */
import fc from "fast-check";
import {
  checkRetainCount,
  DEFAULT_POLICY,
  isoWeekKey,
  planRetention,
  policyOf,
  type RetentionCandidate,
  type RetentionPolicy,
} from "../../lib/retention/policy";

const HOUR = 3600_000;
const DAY = 24 * HOUR;
/** A Monday, 00:00 UTC. */
const START = Date.UTC(2025, 0, 6);

function timeline(count: number, everyMs: number, start = START): RetentionCandidate[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `p${String(i).padStart(5, "0")}`,
    time: start + i * everyMs,
  }));
}

const none: RetentionPolicy = { last: 0, daily: 0, weekly: 0, monthly: 0 };

function keptIds(points: RetentionCandidate[], policy: RetentionPolicy, now: Date) {
  return planRetention(points, policy, now).keep.map((k) => k.id);
}

test("ISO weeks: Monday starts a week, and the week of 2026-01-01 (a Thursday) is 2026-W01; 2024-12-30 is 2025-W01", () => {
  expect(isoWeekKey(Date.UTC(2026, 0, 1))).toBe("2026-W01");
  expect(isoWeekKey(Date.UTC(2024, 11, 30))).toBe("2025-W01");
  expect(isoWeekKey(Date.UTC(2024, 11, 29, 23, 59))).toBe("2024-W52");
  expect(isoWeekKey(Date.UTC(2021, 0, 3))).toBe("2020-W53");
  expect(isoWeekKey(START)).toBe(isoWeekKey(START + 6 * DAY + 23 * HOUR));
  expect(isoWeekKey(START)).not.toBe(isoWeekKey(START + 7 * DAY));
});

describe("every 12 hours for 400 days, default policy (last 14, weekly 4, monthly 12)", () => {
  const points = timeline(800, 12 * HOUR);
  const newest = points[points.length - 1];
  const now = new Date(newest.time + HOUR);
  const plan = planRetention(points, DEFAULT_POLICY, now);

  test("keeps the last 14, the newest of each of the last 4 weeks and 12 months, deletes the rest", () => {
    const kept = new Set(plan.keep.map((k) => k.id));
    // The last 14: one week of points.
    for (const p of points.slice(-14)) expect(kept.has(p.id)).toBe(true);
    const newestOf = (key: (t: number) => string) => {
      const seen = new Map<string, RetentionCandidate>();
      for (const p of points) seen.set(key(p.time), p); // oldest first, so the last one wins
      return [...seen.values()];
    };
    const weeklies = newestOf(isoWeekKey).slice(-4);
    const monthlies = newestOf((t) => new Date(t).toISOString().slice(0, 7)).slice(-12);
    for (const p of [...weeklies, ...monthlies]) expect(kept.has(p.id)).toBe(true);
    const expected = new Set([...points.slice(-14), ...weeklies, ...monthlies].map((p) => p.id));
    expect([...kept].sort()).toEqual([...expected].sort());
    // 14 + weeklies outside the last week + monthlies outside them: well under 30.
    expect(plan.keep.length).toBe(expected.size);
    expect(plan.keep.length).toBeLessThan(30);
  });

  test("every point is kept or deleted exactly once, each with a reason, newest first", () => {
    const all = [...plan.keep, ...plan.delete].map((d) => d.id).sort();
    expect(all).toEqual(points.map((p) => p.id).sort());
    for (const d of [...plan.keep, ...plan.delete]) expect(d.reasons.length).toBeGreaterThan(0);
    expect(plan.keep[0].id).toBe(newest.id);
    expect(plan.keep[0].reasons).toContain("newest restore point");
    for (const list of [plan.keep, plan.delete])
      for (let i = 1; i < list.length; i++) expect(list[i - 1].time).toBeGreaterThanOrEqual(list[i].time);
  });

  test("reasons name the bucket: a monthly names its month, a weekly its ISO week", () => {
    const month = new Date(newest.time).toISOString().slice(0, 7);
    expect(plan.keep[0].reasons).toEqual(
      expect.arrayContaining(["last 14 (#1)", `weekly ${isoWeekKey(newest.time)}`, `monthly ${month}`]),
    );
  });
});

test("daily: the newest point of each of the last N days that have points", () => {
  const points = timeline(40, 12 * HOUR); // 20 days, two a day (00:00 and 12:00)
  const now = new Date(points[points.length - 1].time);
  const kept = keptIds(points, { ...none, daily: 5 }, now);
  expect(kept).toEqual(["p00039", "p00037", "p00035", "p00033", "p00031"]);
});

test("gaps: a bucket without points is not counted, so an outage does not eat the kept history", () => {
  // Ten days of daily points, a 30-day outage, then ten more.
  const before = timeline(10, DAY);
  const after = timeline(10, DAY, START + 40 * DAY).map((p, i) => ({ ...p, id: `q${i}` }));
  const points = [...before, ...after];
  const now = new Date(after[after.length - 1].time);
  const kept = keptIds(points, { ...none, daily: 15 }, now);
  expect(kept).toHaveLength(15);
  expect(kept).toEqual([
    ...after.map((p) => p.id).reverse(),
    ...before
      .slice(-5)
      .map((p) => p.id)
      .reverse(),
  ]);
  // Monthly across the outage: January and February have points, so three monthlies find two.
  const monthly = planRetention(points, { ...none, monthly: 3 }, now).keep;
  expect(monthly.map((k) => [k.id, k.reasons])).toEqual([
    ["q9", ["newest restore point", "monthly 2025-02"]],
    ["p00009", ["monthly 2025-01"]],
  ]);
});

test("the newest point is kept by a policy that keeps nothing, and it is the only one kept", () => {
  const points = timeline(50, 12 * HOUR);
  const plan = planRetention(points, none, new Date(points[49].time + DAY));
  expect(plan.keep.map((k) => k.id)).toEqual(["p00049"]);
  expect(plan.keep[0].reasons).toEqual(["newest restore point"]);
  expect(plan.delete).toHaveLength(49);
});

test("a point being read (readingUntil after now) is kept; once that time passes it is not", () => {
  const points = timeline(10, DAY);
  points[2] = { ...points[2], readingUntil: new Date(points[9].time + HOUR).toISOString() };
  const during = planRetention(points, { ...none, last: 3 }, new Date(points[9].time + 30 * 60_000));
  expect(during.keep.map((k) => k.id)).toEqual(["p00009", "p00008", "p00007", "p00002"]);
  expect(during.keep[3].reasons[0]).toMatch(/^being read by a restore until /);
  const after = planRetention(points, { ...none, last: 3 }, new Date(points[9].time + 2 * HOUR));
  expect(after.keep.map((k) => k.id)).toEqual(["p00009", "p00008", "p00007"]);
});

test("pinned points (the base) are kept with the caller's reason", () => {
  const points = timeline(5, DAY);
  const plan = planRetention(points, none, new Date(points[4].time), new Map([["p00001", "the base"]]));
  expect(plan.keep.map((k) => [k.id, k.reasons])).toEqual([
    ["p00004", ["newest restore point"]],
    ["p00001", ["the base"]],
  ]);
});

test("the plan does not depend on the order points are given in", () => {
  const points = timeline(100, 7 * HOUR);
  const shuffled = [...points].sort(() => Math.random() - 0.5);
  const now = new Date(points[99].time);
  expect(planRetention(shuffled, DEFAULT_POLICY, now)).toEqual(planRetention(points, DEFAULT_POLICY, now));
});

test("monotone: a point deleted now is deleted again after more points arrive and deleted ones are gone", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 3 * DAY }), { minLength: 1, maxLength: 120 }),
      fc.integer({ min: 1, max: 60 }),
      fc.record({
        last: fc.integer({ min: 0, max: 5 }),
        daily: fc.integer({ min: 0, max: 5 }),
        weekly: fc.integer({ min: 0, max: 4 }),
        monthly: fc.integer({ min: 0, max: 3 }),
      }),
      (gaps, split, policy) => {
        let t = START;
        const all = gaps.map((g, i) => ({ id: `p${String(i).padStart(4, "0")}`, time: (t += g) }));
        const earlier = all.slice(0, Math.min(split, all.length));
        const first = planRetention(earlier, policy, new Date(earlier[earlier.length - 1].time));
        const deleted = new Set(first.delete.map((d) => d.id));
        // Later: the deleted points are gone (or still there after a crash), and newer ones exist.
        for (const survivors of [all.filter((p) => !deleted.has(p.id)), all]) {
          const later = planRetention(survivors, policy, new Date(all[all.length - 1].time));
          const keptLater = new Set(later.keep.map((k) => k.id));
          for (const id of deleted) expect(keptLater.has(id)).toBe(false);
        }
        // And the first plan applied again to what it left deletes nothing more.
        const again = planRetention(
          earlier.filter((p) => !deleted.has(p.id)),
          policy,
          new Date(earlier[earlier.length - 1].time),
        );
        expect(again.delete).toEqual([]);
      },
    ),
  );
});

test("counts are checked: whole numbers from 0 to 1000, strings from the CLI included", () => {
  expect(checkRetainCount("--keep-last", 0)).toBeUndefined();
  expect(checkRetainCount("--keep-last", "14")).toBeUndefined();
  expect(checkRetainCount("--keep-last", 1000)).toBeUndefined();
  for (const bad of [-1, 1.5, 1001, "x", "", "1e3", Number.NaN, "-2"])
    expect(checkRetainCount("--keep-last", bad)).toMatch(
      /^--keep-last .* is not a whole number from 0 to 1000$/,
    );
  expect(() => planRetention([], { ...none, last: -1 }, new Date())).toThrow(/last -1/);
});

test("a disk without its own counts gets the defaults; its own counts win, 0 included", () => {
  expect(policyOf({})).toEqual(DEFAULT_POLICY);
  expect(policyOf({ retainLast: 3, retainWeekly: 0 })).toEqual({ ...DEFAULT_POLICY, last: 3, weekly: 0 });
});
