/**
 * Comparing one window of two blobs: read the ranges valid on both sides, and name the pages whose
 * bytes differ. The first blob's bytes come back with the answer, so a resync writes the differing
 * pages from what it already read instead of reading them again.
 *
 *   first valid    ████████░░░░████████
 *   second valid   ░░░░████████████░░░░
 *   writes         ████  ≠≠        ████   (valid only in first, or bytes differ)
 *   clears                 ████           (valid only in second)
 *
 * The listing (lister.ts, kind compare) sorts pages into "only first", "only second" and "both";
 * this reads "both", at most one window (4 MiB per side) at a time.
 */
import { differingPages, type PageRange } from "../ranges";
import type { PageAddress, PageStore } from "../storage/port";

export interface ComparedRange {
  range: PageRange;
  /** The first blob's bytes of `range`. */
  data: Buffer;
  /** Pages of `range` whose bytes differ, normalized. */
  differing: PageRange[];
}

export async function compareRanges(
  storage: PageStore,
  first: PageAddress,
  second: PageAddress,
  ranges: PageRange[],
): Promise<ComparedRange[]> {
  const out: ComparedRange[] = [];
  for (const range of ranges) {
    const [a, b] = await Promise.all([storage.read(first, range), storage.read(second, range)]);
    out.push({ range, data: a, differing: differingPages(a, b, range.start) });
  }
  return out;
}
