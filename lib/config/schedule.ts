/**
 * NCRONTAB schedules as the Azure Functions timer reads them: six fields, `second minute hour day
 * month day-of-week`, each `*`, a number, a name (JAN-DEC, SUN-SAT), a range `a-b`, a step `*\/n`,
 * `a-b/n` or `a/n`, or a comma list of those. Guarantees: a bad expression is rejected when parsed,
 * with an error naming the field, the offending part and the allowed values, and an expression that
 * can never fire (30 February) is rejected too; occurrences are computed in UTC (the Functions host
 * on Linux, and on Windows without WEBSITE_TIME_ZONE) and are whole seconds; `nextOccurrence` is
 * strictly after its argument and `previousOccurrence` strictly before, so stepping either way never
 * stalls. As in NCrontab (and unlike Vixie cron), a restricted day and a restricted day-of-week must
 * both match.
 */

export class ScheduleError extends Error {
  constructor(
    readonly expression: string,
    /** The field at fault, when one is: "second", "minute", … "day-of-week". */
    readonly field: string | undefined,
    detail: string,
  ) {
    super(`bad NCRONTAB schedule "${expression}": ${field ? `${field} field: ` : ""}${detail}`);
    this.name = "ScheduleError";
  }
}

interface FieldSpec {
  name: string;
  min: number;
  max: number;
  names?: readonly string[];
}

const MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/** In expression order. Day-of-week allows 7 for Sunday, as NCrontab and most crons do. */
const FIELDS: readonly FieldSpec[] = [
  { name: "second", min: 0, max: 59 },
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: MONTH_NAMES },
  { name: "day-of-week", min: 0, max: 7, names: DAY_NAMES },
];

const SECOND_MS = 1000;
const DAY_MS = 24 * 60 * 60 * SECOND_MS;

/**
 * How far a search may look before giving up. A schedule that passes the feasibility check fires
 * within 28 years (the weekday pattern of the calendar repeats every 28 years, so even 29 February
 * on a given weekday recurs), or a few more when a skipped century leap year (2100) interrupts the
 * pattern; 40 years covers both, and only an impossible search runs that far.
 */
const SEARCH_YEARS = 40;
const SEARCH_LIMIT_MS = SEARCH_YEARS * 366 * DAY_MS;

/**
 * Fixed origin of the sample from which `interval` is measured, so the same expression always
 * yields the same interval. 2024-01-01 is a Monday at the start of a leap year.
 */
const INTERVAL_SAMPLE_ORIGIN = Date.UTC(2024, 0, 1);
/** Gaps sampled for `interval`: enough to see weekday and month-length patterns, cheap to compute. */
const INTERVAL_SAMPLE_GAPS = 64;

export interface Schedule {
  expression: string;
  /** The first occurrence strictly after `after`. */
  next(after: Date): Date;
  /** The last occurrence strictly before `before`. */
  previous(before: Date): Date;
  /**
   * The typical gap between occurrences in milliseconds: the median of the first gaps after a fixed
   * date. 12 h for `0 0 *\/12 * * *`; 1 day for a weekday schedule (its weekend gap is the exception).
   */
  readonly intervalMs: number;
}

interface Fields {
  second: boolean[];
  minute: boolean[];
  hour: boolean[];
  day: boolean[];
  month: boolean[];
  weekday: boolean[];
}

function parseValue(raw: string, spec: FieldSpec, fail: (detail: string) => never): number {
  if (/^\d+$/.test(raw)) {
    const n = Number(raw);
    if (n < spec.min || n > spec.max) fail(`${raw} is outside ${spec.min}-${spec.max}`);
    return n;
  }
  const index = spec.names?.indexOf(raw.toUpperCase()) ?? -1;
  if (index >= 0) return index + (spec.name === "month" ? 1 : 0);
  const names = spec.names ? ` or a name ${spec.names[0]}-${spec.names[spec.names.length - 1]}` : "";
  return fail(`"${raw}" is not a number ${spec.min}-${spec.max}${names}`);
}

function parseField(expression: string, raw: string, spec: FieldSpec): boolean[] {
  const fail = (detail: string): never => {
    throw new ScheduleError(expression, spec.name, detail);
  };
  const allowed = new Array<boolean>(spec.max + 1).fill(false);
  for (const part of raw.split(",")) {
    if (part === "") fail(`"${raw}" has an empty list item`);
    const slash = part.split("/");
    if (slash.length > 2) fail(`"${part}" has more than one "/"`);
    const [rangeText, stepText] = slash;
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) === 0) {
        fail(`step "${stepText}" in "${part}" is not a positive whole number`);
      }
      step = Number(stepText);
    }
    let lo: number;
    let hi: number;
    // `*` and `a/n` in day-of-week end at Saturday: 7 is only an alias for Sunday, not an 8th day.
    const last = spec.name === "day-of-week" ? 6 : spec.max;
    if (rangeText === "*") {
      lo = spec.min;
      hi = last;
    } else if (rangeText.includes("-")) {
      const bounds = rangeText.split("-");
      if (bounds.length !== 2) fail(`"${rangeText}" is not a range a-b`);
      lo = parseValue(bounds[0], spec, fail);
      hi = parseValue(bounds[1], spec, fail);
      if (lo > hi) fail(`range "${rangeText}" runs backwards`);
    } else {
      lo = parseValue(rangeText, spec, fail);
      // `a/n` means from a to the end of the field in steps of n; a bare `a` is just a.
      hi = stepText !== undefined ? Math.max(lo, last) : lo;
    }
    for (let v = lo; v <= hi; v += step) allowed[v] = true;
  }
  return allowed;
}

/** Longest each month can be (February in a leap year), to reject days that never occur. */
const MONTH_MAX_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function parseFields(expression: string): Fields {
  const parts = expression.trim().split(/\s+/).filter(Boolean);
  if (parts.length !== FIELDS.length) {
    const hint =
      parts.length === 5
        ? "; the Functions timer wants six fields, seconds first (e.g. `0 0 */12 * * *`)"
        : " (second minute hour day month day-of-week, e.g. `0 0 */12 * * *`)";
    throw new ScheduleError(expression, undefined, `has ${parts.length} fields, expected 6${hint}`);
  }
  const [second, minute, hour, day, month, weekday] = parts.map((p, i) =>
    parseField(expression, p, FIELDS[i]),
  );
  if (weekday[7]) weekday[0] = true; // 7 is Sunday too
  const feasible = MONTH_MAX_DAYS.some((days, m) => month[m + 1] && day.slice(1, days + 1).some(Boolean));
  if (!feasible) {
    throw new ScheduleError(expression, "day", "no selected month has any of the selected days");
  }
  return { second, minute, hour, day, month, weekday };
}

function dayMatches(f: Fields, t: Date): boolean {
  return f.day[t.getUTCDate()] && f.weekday[t.getUTCDay()];
}

function fieldsOf(t: Date): [number, number, number, number, number, number] {
  return [
    t.getUTCFullYear(),
    t.getUTCMonth(),
    t.getUTCDate(),
    t.getUTCHours(),
    t.getUTCMinutes(),
    t.getUTCSeconds(),
  ];
}

/**
 * Walks forward one field at a time: a mismatch in a coarse field jumps to the start of its next
 * unit (next month, next day, …), which resets every finer field to its first value.
 */
function nextOf(f: Fields, expression: string, after: Date): Date {
  let t = Math.floor(after.getTime() / SECOND_MS) * SECOND_MS + SECOND_MS;
  const limit = t + SEARCH_LIMIT_MS;
  while (t <= limit) {
    const d = new Date(t);
    const [y, mo, day, h, mi, s] = fieldsOf(d);
    if (!f.month[mo + 1]) t = Date.UTC(y, mo + 1, 1);
    else if (!dayMatches(f, d)) t = Date.UTC(y, mo, day + 1);
    else if (!f.hour[h]) t = Date.UTC(y, mo, day, h + 1);
    else if (!f.minute[mi]) t = Date.UTC(y, mo, day, h, mi + 1);
    else if (!f.second[s]) t += SECOND_MS;
    else return d;
  }
  throw new ScheduleError(
    expression,
    undefined,
    `never fires in the ${SEARCH_YEARS} years after ${after.toISOString()}`,
  );
}

/** The mirror of nextOf: a mismatch jumps to the last second of the previous unit. */
function previousOf(f: Fields, expression: string, before: Date): Date {
  let t = Math.ceil(before.getTime() / SECOND_MS) * SECOND_MS - SECOND_MS;
  const limit = t - SEARCH_LIMIT_MS;
  while (t >= limit) {
    const d = new Date(t);
    const [y, mo, day, h, mi, s] = fieldsOf(d);
    if (!f.month[mo + 1]) t = Date.UTC(y, mo, 1) - SECOND_MS;
    else if (!dayMatches(f, d)) t = Date.UTC(y, mo, day) - SECOND_MS;
    else if (!f.hour[h]) t = Date.UTC(y, mo, day, h) - SECOND_MS;
    else if (!f.minute[mi]) t = Date.UTC(y, mo, day, h, mi) - SECOND_MS;
    else if (!f.second[s]) t -= SECOND_MS;
    else return d;
  }
  throw new ScheduleError(
    expression,
    undefined,
    `never fired in the ${SEARCH_YEARS} years before ${before.toISOString()}`,
  );
}

function medianGap(f: Fields, expression: string): number {
  const gaps: number[] = [];
  let at = nextOf(f, expression, new Date(INTERVAL_SAMPLE_ORIGIN - SECOND_MS));
  while (gaps.length < INTERVAL_SAMPLE_GAPS) {
    const following = nextOf(f, expression, at);
    gaps.push(following.getTime() - at.getTime());
    at = following;
  }
  gaps.sort((a, b) => a - b);
  return gaps[Math.floor(gaps.length / 2)];
}

/** Parsed schedules by expression: the timer parses the same one or two expressions on every tick. */
const parsed = new Map<string, Schedule>();
/** The cache is emptied past this many expressions, so arbitrary input cannot grow it without end. */
const PARSED_CACHE_LIMIT = 100;

/** Parses an NCRONTAB expression; throws ScheduleError naming the field at fault. */
export function parseSchedule(expression: string): Schedule {
  const known = parsed.get(expression);
  if (known) return known;
  const fields = parseFields(expression);
  let intervalMs: number | undefined;
  const schedule: Schedule = {
    expression,
    next: (after) => nextOf(fields, expression, after),
    previous: (before) => previousOf(fields, expression, before),
    // Computed on first use: a yearly schedule samples 64 years, which parsing need not pay for.
    get intervalMs() {
      return (intervalMs ??= medianGap(fields, expression));
    },
  };
  if (parsed.size >= PARSED_CACHE_LIMIT) parsed.clear();
  parsed.set(expression, schedule);
  return schedule;
}

export function nextOccurrence(expression: string, after: Date): Date {
  return parseSchedule(expression).next(after);
}

export function previousOccurrence(expression: string, before: Date): Date {
  return parseSchedule(expression).previous(before);
}

/** The typical gap between occurrences of `expression`, in milliseconds (see Schedule.intervalMs). */
export function intervalOf(expression: string): number {
  return parseSchedule(expression).intervalMs;
}
