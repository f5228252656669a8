/**
 * The NCRONTAB parser (occurrences in UTC, both directions, month ends, steps, names, clear errors
 * naming the field) and the timer's arithmetic on synthetic disks: per-disk interval, never
 * succeeded, slack for a backup's own duration, one catch-up after a long outage, next due time
 * and staleness.
 */
import type { DiskRecord } from "../../lib/lineage/types";
import {
  intervalOf,
  nextOccurrence,
  parseSchedule,
  previousOccurrence,
  ScheduleError,
} from "../../lib/config/schedule";
import { dueDisks, intervalMsOf, isStale, nextDueAt } from "../../lib/app/timer";

const at = (iso: string) => new Date(iso);
const HOUR = 60 * 60 * 1000;
const MINUTE = 60 * 1000;
const DEFAULT = "0 0 */12 * * *";

/** The first `n` occurrences after `from`, as ISO strings. */
function nextN(expr: string, from: string, n: number): string[] {
  const out: string[] = [];
  let t = at(from);
  for (let i = 0; i < n; i++) {
    t = nextOccurrence(expr, t);
    out.push(t.toISOString());
  }
  return out;
}

describe("nextOccurrence", () => {
  test("the default schedule fires at 00:00 and 12:00 UTC, strictly after its argument", () => {
    expect(nextN(DEFAULT, "2026-03-01T05:00:00Z", 3)).toEqual([
      "2026-03-01T12:00:00.000Z",
      "2026-03-02T00:00:00.000Z",
      "2026-03-02T12:00:00.000Z",
    ]);
    expect(nextOccurrence(DEFAULT, at("2026-03-01T12:00:00Z")).toISOString()).toBe(
      "2026-03-02T00:00:00.000Z",
    );
    expect(nextOccurrence(DEFAULT, at("2026-03-01T11:59:59.999Z")).toISOString()).toBe(
      "2026-03-01T12:00:00.000Z",
    );
  });

  test("steps, ranges and lists in seconds and minutes", () => {
    expect(nextN("*/15 * * * * *", "2026-01-01T00:00:07Z", 3)).toEqual([
      "2026-01-01T00:00:15.000Z",
      "2026-01-01T00:00:30.000Z",
      "2026-01-01T00:00:45.000Z",
    ]);
    expect(nextN("0 10-20/5 * * * *", "2026-01-01T00:12:00Z", 3)).toEqual([
      "2026-01-01T00:15:00.000Z",
      "2026-01-01T00:20:00.000Z",
      "2026-01-01T01:10:00.000Z",
    ]);
    expect(nextN("30 5,50 8 * * *", "2026-01-01T08:06:00Z", 2)).toEqual([
      "2026-01-01T08:50:30.000Z",
      "2026-01-02T08:05:30.000Z",
    ]);
    // `a/n` runs from a to the end of the field.
    expect(nextN("0 45/10 * * * *", "2026-01-01T00:00:00Z", 3)).toEqual([
      "2026-01-01T00:45:00.000Z",
      "2026-01-01T00:55:00.000Z",
      "2026-01-01T01:45:00.000Z",
    ]);
  });

  test("month ends: day 31 skips short months, 29 February waits for a leap year, year rollover", () => {
    expect(nextN("0 0 0 31 * *", "2026-01-31T00:00:00Z", 3)).toEqual([
      "2026-03-31T00:00:00.000Z",
      "2026-05-31T00:00:00.000Z",
      "2026-07-31T00:00:00.000Z",
    ]);
    expect(nextOccurrence("0 0 0 29 2 *", at("2025-01-01T00:00:00Z")).toISOString()).toBe(
      "2028-02-29T00:00:00.000Z",
    );
    expect(nextOccurrence("59 59 23 31 12 *", at("2026-12-31T23:59:59Z")).toISOString()).toBe(
      "2027-12-31T23:59:59.000Z",
    );
    expect(nextOccurrence(DEFAULT, at("2026-12-31T12:00:00Z")).toISOString()).toBe(
      "2027-01-01T00:00:00.000Z",
    );
  });

  test("names, day-of-week, 7 as Sunday, and day AND day-of-week as in NCrontab", () => {
    // 2026-01-01 is a Thursday.
    expect(nextN("0 30 9 * * MON-FRI", "2026-01-01T10:00:00Z", 3)).toEqual([
      "2026-01-02T09:30:00.000Z",
      "2026-01-05T09:30:00.000Z",
      "2026-01-06T09:30:00.000Z",
    ]);
    expect(nextOccurrence("0 0 0 * * 7", at("2026-01-01T00:00:00Z")).toISOString()).toBe(
      "2026-01-04T00:00:00.000Z",
    );
    expect(nextOccurrence("0 0 0 * * sun", at("2026-01-01T00:00:00Z")).toISOString()).toBe(
      "2026-01-04T00:00:00.000Z",
    );
    expect(nextOccurrence("0 0 0 1 jan-mar *", at("2026-03-02T00:00:00Z")).toISOString()).toBe(
      "2027-01-01T00:00:00.000Z",
    );
    // The 13th that is a Friday: February 2026.
    expect(nextOccurrence("0 0 0 13 * FRI", at("2026-01-01T00:00:00Z")).toISOString()).toBe(
      "2026-02-13T00:00:00.000Z",
    );
    // `*/2` in day-of-week is Sun, Tue, Thu, Sat, and does not add 7 (Sunday again).
    expect(nextN("0 0 0 * * */2", "2026-01-03T00:00:00Z", 3)).toEqual([
      "2026-01-04T00:00:00.000Z",
      "2026-01-06T00:00:00.000Z",
      "2026-01-08T00:00:00.000Z",
    ]);
  });

  test("previousOccurrence mirrors nextOccurrence", () => {
    expect(previousOccurrence(DEFAULT, at("2026-03-01T12:00:00Z")).toISOString()).toBe(
      "2026-03-01T00:00:00.000Z",
    );
    expect(previousOccurrence(DEFAULT, at("2026-03-01T12:00:00.001Z")).toISOString()).toBe(
      "2026-03-01T12:00:00.000Z",
    );
    expect(previousOccurrence("0 0 0 31 * *", at("2026-03-01T00:00:00Z")).toISOString()).toBe(
      "2026-01-31T00:00:00.000Z",
    );
    expect(previousOccurrence("0 0 0 29 2 *", at("2028-01-01T00:00:00Z")).toISOString()).toBe(
      "2024-02-29T00:00:00.000Z",
    );
    // Walking back from each next occurrence lands on the previous one, for a few shapes.
    for (const expr of [DEFAULT, "*/7 */13 * * * *", "0 30 9 * * MON-FRI", "0 0 0 31 * *"]) {
      let t = at("2026-02-20T03:04:05Z");
      for (let i = 0; i < 20; i++) {
        const next = nextOccurrence(expr, t);
        expect(previousOccurrence(expr, next).getTime()).toBeLessThanOrEqual(t.getTime());
        expect(previousOccurrence(expr, new Date(next.getTime() + 1)).toISOString()).toBe(next.toISOString());
        t = next;
      }
    }
  });

  test("intervalOf is the typical gap", () => {
    expect(intervalOf(DEFAULT)).toBe(12 * HOUR);
    expect(intervalOf("0 */5 * * * *")).toBe(5 * MINUTE);
    expect(intervalOf("*/10 * * * * *")).toBe(10 * 1000);
    // Weekdays: the weekend gap is the exception, not the rule.
    expect(intervalOf("0 30 9 * * 1-5")).toBe(24 * HOUR);
    expect(intervalOf("0 0 0 1 * *")).toBeGreaterThanOrEqual(30 * 24 * HOUR);
  });
});

describe("bad expressions name the field", () => {
  const cases: [string, RegExp][] = [
    ["0 0 */12 * *", /5 fields, expected 6.*seconds first/],
    ["0 0 0 0 * * * *", /8 fields, expected 6/],
    ["", /0 fields/],
    ["60 * * * * *", /second field: 60 is outside 0-59/],
    ["0 61 * * * *", /minute field: 61 is outside 0-59/],
    ["0 0 24 * * *", /hour field: 24 is outside 0-23/],
    ["0 0 0 0 * *", /day field: 0 is outside 1-31/],
    ["0 0 0 * 13 *", /month field: 13 is outside 1-12/],
    ["0 0 0 * FOO *", /month field: "FOO" is not a number 1-12 or a name JAN-DEC/],
    ["0 0 0 * * 8", /day-of-week field: 8 is outside 0-7/],
    ["0 0 */0 * * *", /hour field: step "0"/],
    ["0 0 */x * * *", /hour field: step "x"/],
    ["0 0 5-1 * * *", /hour field: range "5-1" runs backwards/],
    ["0 0 1,,2 * * *", /hour field: .*empty list item/],
    ["0 0 1/2/3 * * *", /hour field: .*more than one/],
    ["0 0 1-2-3 * * *", /hour field: "1-2-3" is not a range/],
    ["0 0 0 30 2 *", /day field: no selected month has any of the selected days/],
    ["0 0 0 31 4,6,9,11 *", /day field: no selected month/],
  ];
  test.each(cases)("%j", (expr, message) => {
    let error: unknown;
    try {
      parseSchedule(expr);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ScheduleError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toContain(`"${expr}"`);
  });
});

function disk(id: string, fields: Partial<DiskRecord> = {}): DiskRecord {
  return {
    id,
    sourceUrl: `https://src.blob.core.windows.net/disks/${id}.vhd`,
    backupAccountUrl: "https://bak.blob.core.windows.net",
    backupContainer: "backups",
    backupBlob: `${id}.vhd`,
    createdAt: "2026-01-01T00:00:00.000Z",
    ...fields,
  };
}

const ids = (disks: DiskRecord[]) => disks.map((d) => d.id);

describe("dueDisks", () => {
  const tick = at("2026-03-01T12:00:00Z");

  test("never succeeded is due; a success one interval ago is due; a recent one is not", () => {
    const disks = [
      disk("fresh"),
      disk("garbled", { lastSuccessAt: "not a time" }),
      disk("lastwindow", { lastSuccessAt: "2026-03-01T00:00:00.000Z" }),
      disk("recent", { lastSuccessAt: "2026-03-01T06:00:00.000Z" }),
    ];
    expect(ids(dueDisks(disks, DEFAULT, tick))).toEqual(["fresh", "garbled", "lastwindow"]);
  });

  test("a backup that took minutes does not slip a window, but one that just ran is not repeated", () => {
    // Started at the 00:00 tick, finished 10 or 70 minutes later: still due at 12:00.
    expect(ids(dueDisks([disk("d", { lastSuccessAt: "2026-03-01T00:10:00.000Z" })], DEFAULT, tick))).toEqual([
      "d",
    ]);
    expect(ids(dueDisks([disk("d", { lastSuccessAt: "2026-03-01T01:10:00.000Z" })], DEFAULT, tick))).toEqual([
      "d",
    ]);
    // Finished two hours after its tick: it really ran late, the next window waits.
    expect(dueDisks([disk("d", { lastSuccessAt: "2026-03-01T02:00:00.000Z" })], DEFAULT, tick)).toEqual([]);
  });

  test("a per-disk interval overrides the schedule's, both ways", () => {
    const hourly = "0 0 * * * *";
    const disks = [
      // Daily on an hourly timer: due once 24 h (less slack) have passed.
      disk("daily-not-yet", { intervalMinutes: 24 * 60, lastSuccessAt: "2026-03-01T00:20:00.000Z" }),
      disk("daily-due", { intervalMinutes: 24 * 60, lastSuccessAt: "2026-02-28T12:20:00.000Z" }),
      // Hourly schedule for this disk's default: 30 min after its last success it is not due yet.
      disk("default", { lastSuccessAt: "2026-03-01T11:30:00.000Z" }),
      // A 30-minute interval on an hourly timer: due at every tick.
      disk("half-hour", { intervalMinutes: 30, lastSuccessAt: "2026-03-01T11:30:00.000Z" }),
    ];
    expect(ids(dueDisks(disks, hourly, tick))).toEqual(["daily-due", "half-hour"]);
  });

  test("slack never makes a disk due a whole tick early, so backups do not creep earlier", () => {
    // Daily disk on an hourly timer, run at 00:00 and finished 00:05: due again at the next 00:00
    // tick, not at 23:00 (slack is capped at half an hour here, not 10 % of a day).
    const hourly = "0 0 * * * *";
    const d = disk("daily", { intervalMinutes: 24 * 60, lastSuccessAt: "2026-03-01T00:05:00.000Z" });
    expect(dueDisks([d], hourly, at("2026-03-01T23:00:00Z"))).toEqual([]);
    expect(ids(dueDisks([d], hourly, at("2026-03-02T00:00:00Z")))).toEqual(["daily"]);
    expect(nextDueAt(d, hourly, at("2026-03-01T13:00:00Z")).toISOString()).toBe("2026-03-02T00:00:00.000Z");
  });

  test("after a long outage one catch-up tick queues each overdue disk once, then nothing until a window passes", () => {
    // The timer was down for three days: the disk missed six windows.
    let d = disk("missed", { lastSuccessAt: "2026-02-26T00:05:00.000Z" });
    const catchUp = at("2026-03-01T09:17:00Z"); // the past-due tick, at host start
    expect(ids(dueDisks([d], DEFAULT, catchUp))).toEqual(["missed"]);
    // The catch-up backup finishes; the regular ticks that follow do not repeat it.
    d = { ...d, lastSuccessAt: "2026-03-01T09:25:00.000Z" };
    expect(dueDisks([d], DEFAULT, at("2026-03-01T12:00:00Z"))).toEqual([]);
    expect(ids(dueDisks([d], DEFAULT, at("2026-03-02T00:00:00Z")))).toEqual(["missed"]);
    // Counting missed windows would have given six backups; here the count over the ticks is two.
    let backups = 0;
    let disk2 = disk("count", { lastSuccessAt: "2026-02-26T00:05:00.000Z" });
    const ticks = [catchUp, at("2026-03-01T12:00:00Z"), at("2026-03-02T00:00:00Z")];
    for (const t of ticks) {
      if (dueDisks([disk2], DEFAULT, t).length) {
        backups++;
        disk2 = { ...disk2, lastSuccessAt: new Date(t.getTime() + 10 * MINUTE).toISOString() };
      }
    }
    expect(backups).toBe(2);
  });
});

describe("nextDueAt and isStale", () => {
  const now = at("2026-03-01T05:00:00Z");

  test("a due disk goes at the next tick; a recent one at the first tick after its interval", () => {
    expect(nextDueAt(disk("never"), DEFAULT, now).toISOString()).toBe("2026-03-01T12:00:00.000Z");
    expect(
      nextDueAt(disk("old", { lastSuccessAt: "2026-02-01T00:00:00.000Z" }), DEFAULT, now).toISOString(),
    ).toBe("2026-03-01T12:00:00.000Z");
    expect(
      nextDueAt(disk("recent", { lastSuccessAt: "2026-03-01T04:00:00.000Z" }), DEFAULT, now).toISOString(),
    ).toBe("2026-03-02T00:00:00.000Z");
    expect(
      nextDueAt(
        disk("weekly", { intervalMinutes: 7 * 24 * 60, lastSuccessAt: "2026-03-01T00:10:00.000Z" }),
        DEFAULT,
        now,
      ).toISOString(),
    ).toBe("2026-03-08T00:00:00.000Z");
  });

  test("stale when the newest point is older than twice the interval", () => {
    const d = disk("d", { createdAt: "2026-02-01T00:00:00.000Z" });
    expect(isStale(d, "2026-03-01T00:00:00.000Z", DEFAULT, now)).toBe(false);
    expect(isStale(d, at("2026-02-28T05:00:00Z"), DEFAULT, now)).toBe(false); // exactly 24 h
    expect(isStale(d, "2026-02-28T04:59:59.000Z", DEFAULT, now)).toBe(true);
    // Per-disk interval: a weekly disk backed up four days ago is fine.
    expect(isStale({ ...d, intervalMinutes: 7 * 24 * 60 }, "2026-02-25T05:00:00.000Z", DEFAULT, now)).toBe(
      false,
    );
    // No point yet: stale only once registered for two intervals.
    expect(isStale(d, undefined, DEFAULT, now)).toBe(true);
    expect(isStale(disk("new", { createdAt: "2026-03-01T00:00:00.000Z" }), undefined, DEFAULT, now)).toBe(
      false,
    );
  });

  test("intervalMsOf: the disk's own, else the schedule's", () => {
    expect(intervalMsOf(disk("a"), DEFAULT)).toBe(12 * HOUR);
    expect(intervalMsOf(disk("b", { intervalMinutes: 90 }), DEFAULT)).toBe(90 * MINUTE);
    expect(intervalMsOf(disk("c", { intervalMinutes: 0 }), DEFAULT)).toBe(12 * HOUR);
  });
});
