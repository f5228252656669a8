/**
 * Text output of the CLI: tables that fit 100 columns (long values shortened in the middle; the
 * whole value is in --json), durations, sizes, and key/value rows.
 */
import type { RunRecord } from "../lineage/types";

/** The widest a table may be: a terminal of 100 columns shows every row on one line. */
export const TABLE_WIDTH = 100;

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function duration(run: Pick<RunRecord, "startedAt" | "finishedAt">): string {
  if (!run.finishedAt) return "-";
  return `${((Date.parse(run.finishedAt) - Date.parse(run.startedAt)) / 1000).toFixed(1)}s`;
}

/** `text` in at most `width` characters, the middle replaced by "…" when it is longer. */
export function shorten(text: string, width: number): string {
  if (text.length <= width) return text;
  if (width <= 1) return "…";
  const head = Math.ceil((width - 1) / 2);
  return `${text.slice(0, head)}…${text.slice(text.length - (width - 1 - head))}`;
}

/** `text` in at most `width` characters, the start replaced by "…": a path keeps its blob name. */
export function shortenStart(text: string, width: number): string {
  if (text.length <= width) return text;
  return width <= 1 ? "…" : `…${text.slice(text.length - (width - 1))}`;
}

/** `text` in at most `width` characters, the end replaced by "…": a sentence keeps its start. */
export function shortenEnd(text: string, width: number): string {
  if (text.length <= width) return text;
  return width <= 1 ? "…" : `${text.slice(0, width - 1)}…`;
}

/** Where a shrunk column loses its characters. */
export type Shorten = "middle" | "start" | "end";

const SHORTEN: Record<Shorten, (text: string, width: number) => string> = {
  middle: shorten,
  start: shortenStart,
  end: shortenEnd,
};

/**
 * Left-aligned columns, two spaces apart; the first row is the header. Columns listed in
 * `shrinkable` (by index; the last column by default) give up width, widest first, until the table
 * fits `width`; their values are shortened in the middle, or where `how` says for that column
 * (paths at the start, so the blob name stays; sentences at the end).
 */
export function table(
  rows: string[][],
  width = TABLE_WIDTH,
  shrinkable?: number[],
  how: Record<number, Shorten> = {},
  /** Columns shrunk only once every `shrinkable` one is as narrow as it goes (ids a user copies). */
  lastResort: number[] = [],
): string {
  if (rows.length === 0) return "";
  const n = rows[0].length;
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (n - 1);
  const canShrink = shrinkable ?? [n - 1];
  // One character at a time from the widest shrinkable column: they end up level, not one of
  // them cut to nothing while another stays whole.
  while (total() > width) {
    const floorOf = (i: number) => Math.max(rows[0][i].length, 8);
    let open = canShrink.filter((i) => widths[i] > floorOf(i));
    if (open.length === 0) open = lastResort.filter((i) => widths[i] > floorOf(i));
    if (open.length === 0) break;
    const widest = open.reduce((best, i) => (widths[i] > widths[best] ? i : best), open[0]);
    widths[widest]--;
  }
  return rows
    .map((r) =>
      r
        .map((c, i) => SHORTEN[how[i] ?? "middle"](c ?? "", widths[i]).padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** Keys left-aligned in one column, values in the next. */
export function rows(pairs: Array<[string, string]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

/** A URL of a blob or account without the scheme and host: `account/container/blob`. */
export function shortUrl(url: string): string {
  try {
    const u = new URL(url);
    const host = u.hostname.split(".")[0];
    const path = decodeURIComponent(u.pathname.replace(/^\/+/, ""));
    return u.hostname.includes(".blob.") ? `${host}/${path}` : path;
  } catch {
    return url;
  }
}

/** "1 restore point", "3 restore points". */
export { plural } from "../core/logger";
