/**
 * Ids for runs and restore points, and the table RowKeys derived from them. Guarantees: an id
 * names its creation time to the millisecond (UTC), so ids with the same prefix sort
 * chronologically as plain strings and `timeOfId` gives the time back exactly; `newestFirstKey`
 * is a pure function of the id whose string order is newest first, so a lookup by id is a point
 * read (PartitionKey + RowKey) and a partition scan lists newest first without sorting. Two ids
 * made in the same millisecond differ by their random suffix, and their relative order is
 * arbitrary.
 */
import crypto from "node:crypto";

/** Keys count down from here; 13 digits cover every millisecond up to 2286-11-20. */
const NEWEST_FIRST_BASE = 9_999_999_999_999;
const KEY_DIGITS = 13;

const PREFIX = /^[A-Za-z][A-Za-z0-9]*$/;
const ID = /^([A-Za-z][A-Za-z0-9]*)-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z-([0-9a-f]{6})$/;

/** E.g. `newId(new Date("2026-11-25T11:41:00.123Z"), "r")` → `r-20261125T114100123Z-3fa9c1`. */
export function newId(now: Date, prefix: "r" | "p" | string): string {
  if (!PREFIX.test(prefix)) throw new Error(`id prefix must be letters and digits, got '${prefix}'`);
  const ms = now.getTime();
  if (!Number.isFinite(ms)) throw new Error("cannot make an id from an invalid date");
  const compact = compactTime(now);
  // Outside years 0000-9999 toISOString widens the year and ids would stop sorting as strings.
  if (compact.length !== 19)
    throw new Error(`cannot make an id for ${now.toISOString()}: the year must have four digits`);
  return `${prefix}-${compact}-${crypto.randomBytes(3).toString("hex")}`;
}

/** The creation time named by an id; throws on anything `newId` could not have made. */
export function timeOfId(id: string): Date {
  const m = ID.exec(id);
  if (!m) throw new Error(`'${id}' is not a diskdelta id (expected e.g. r-20261125T114100123Z-3fa9c1)`);
  const [, , year, month, day, hour, minute, second, milli] = m;
  const time = new Date(`${year}-${month}-${day}T${hour}:${minute}:${second}.${milli}Z`);
  // Date parsing rolls over impossible fields (month 13) or yields NaN; either way it is no id of ours.
  if (
    !Number.isFinite(time.getTime()) ||
    compactTime(time) !== `${year}${month}${day}T${hour}${minute}${second}${milli}Z`
  )
    throw new Error(`'${id}' is not a diskdelta id: its time is not a valid UTC time`);
  return time;
}

/** The RowKey of a run or restore point: newest first, and still unique because it ends with the id. */
export function newestFirstKey(id: string): string {
  const ms = timeOfId(id).getTime();
  if (ms < 0 || ms > NEWEST_FIRST_BASE)
    throw new Error(`id ${id} is outside the years 1970-2286 that a newest-first key can order`);
  return `${String(NEWEST_FIRST_BASE - ms).padStart(KEY_DIGITS, "0")}_${id}`;
}

/** 2026-11-25T11:41:00.123Z → 20261125T114100123Z */
function compactTime(time: Date): string {
  return time.toISOString().replace(/[-:.]/g, "");
}
