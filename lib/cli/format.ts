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

/**
 * Left-aligned columns, two spaces apart; the first row is the header. Columns listed in
 * `shrinkable` (by index; the last column by default) give up width, widest first, until the table
 * fits `width`; their values are shortened in the middle.
 */
export function table(rows: string[][], width = TABLE_WIDTH, shrinkable?: number[]): string {
  if (rows.length === 0) return "";
  const n = rows[0].length;
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (n - 1);
  const canShrink = shrinkable ?? [n - 1];
  while (total() > width) {
    const widest = canShrink.reduce((best, i) => (widths[i] > widths[best] ? i : best), canShrink[0]);
    const floor = Math.max(rows[0][widest].length, 8);
    if (widths[widest] <= floor) break;
    widths[widest] = Math.max(floor, widths[widest] - (total() - width));
  }
  return rows
    .map((r) =>
      r
        .map((c, i) => shorten(c ?? "", widths[i]).padEnd(widths[i]))
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
