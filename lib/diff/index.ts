/**
 * Change detection, one segment of the disk at a time, so memory is bounded by the segment and
 * never by the disk. Three detectors, all returning a ChangeSet of normalized half-open ranges:
 *
 * - `serviceDiffSegment`: the page-range diff (`prevsnapshot`), following continuation markers,
 *   pages written AND pages cleared. Refusals (BlobOverwritten, …) propagate for the caller to
 *   turn into a resync.
 * - `validRangesSegment`: the valid ranges of one blob (a first copy reads only these).
 * - `compareSegment`: reads the source snapshot and the backup blob and returns the pages that
 *   differ (or are valid only in the source) as writes, and the pages valid only in the backup as
 *   clears. Used for resyncs and on endpoints that answer diffs wrongly (Azurite).
 *
 * Each page request is retried on its own, resuming from its continuation marker.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { withRetry, type RetryPolicy } from "../azure/retry";
import { forEachBounded } from "../concurrency";
import {
  chunksOf,
  differingPages,
  fromInclusive,
  intersect,
  normalize,
  subtract,
  type PageRange,
} from "../ranges";

export interface ChangeSet {
  writes: PageRange[];
  clears: PageRange[];
  /** The `Server` header of the listing's first response: who actually answered. */
  server?: string;
}

/**
 * Ranges per listing page. Azure caps a response at 10,000 ranges; asking for the cap keeps round
 * trips few on fragmented disks while each response stays well under a megabyte of XML.
 */
export const LIST_PAGE_SIZE = 10_000;

interface RangePage {
  pageRange?: { start: number; end: number }[];
  clearRange?: { start: number; end: number }[];
  continuationToken?: string;
  _response?: { headers: { get(name: string): string | undefined } };
}

async function collectPages(
  policy: RetryPolicy,
  open: (continuationToken: string | undefined) => AsyncIterableIterator<RangePage>,
): Promise<ChangeSet> {
  const writes: PageRange[] = [];
  const clears: PageRange[] = [];
  let token: string | undefined;
  let server: string | undefined;
  do {
    const marker = token;
    const page = await withRetry(policy, async () => {
      const result = await open(marker).next();
      return result.done ? undefined : result.value;
    });
    if (!page) break;
    server ??= page._response?.headers.get("server");
    for (const r of page.pageRange ?? []) writes.push(fromInclusive(r));
    for (const r of page.clearRange ?? []) clears.push(fromInclusive(r));
    token = page.continuationToken || undefined;
  } while (token);
  return { writes: normalize(writes), clears: normalize(clears), server };
}

/** The service's diff of `snapshot` (the client) against `prevSnapshot`, restricted to `segment`. */
export async function serviceDiffSegment(
  snapshot: PageBlobClient,
  prevSnapshot: string,
  segment: PageRange,
  policy: RetryPolicy,
  pageSize = LIST_PAGE_SIZE,
): Promise<ChangeSet> {
  const count = segment.end - segment.start;
  const set = await collectPages(policy, (continuationToken) =>
    snapshot
      .listPageRangesDiff(segment.start, count, prevSnapshot)
      .byPage({ continuationToken, maxPageSize: pageSize }),
  );
  // The service answers in whole pages of the segment; clip defensively so a segment never leaks into the next.
  return {
    writes: intersect(set.writes, [segment]),
    clears: intersect(set.clears, [segment]),
    server: set.server,
  };
}

/** The valid (written, not cleared) ranges of a blob or snapshot within `segment`. */
export async function validRangesSegment(
  blob: PageBlobClient,
  segment: PageRange,
  policy: RetryPolicy,
  pageSize = LIST_PAGE_SIZE,
): Promise<PageRange[]> {
  const count = segment.end - segment.start;
  const set = await collectPages(policy, (continuationToken) =>
    blob.listPageRanges(segment.start, count).byPage({ continuationToken, maxPageSize: pageSize }),
  );
  return intersect(set.writes, [segment]);
}

export async function downloadRange(
  blob: PageBlobClient,
  range: PageRange,
  policy: RetryPolicy,
): Promise<Buffer> {
  const count = range.end - range.start;
  return withRetry(policy, () => blob.downloadToBuffer(range.start, count, { concurrency: 1 }));
}

/**
 * Compares one segment of the source snapshot with the backup blob (already sized like the source).
 *
 *   source valid   ████████░░░░████████
 *   backup valid   ░░░░████████████░░░░
 *   writes         ████  ≠≠        ████   (valid only in source, or bytes differ)
 *   clears                 ████           (valid only in backup)
 *
 * Only pages valid on both sides are read from both; pages valid only in the source are written
 * without reading the backup. Reads go window by window, `concurrency` windows at a time.
 */
export async function compareSegment(
  source: PageBlobClient,
  backup: PageBlobClient,
  segment: PageRange,
  policy: RetryPolicy,
  concurrency: number,
): Promise<ChangeSet> {
  const [sourceValid, backupValid] = await Promise.all([
    validRangesSegment(source, segment, policy),
    validRangesSegment(backup, segment, policy),
  ]);
  const clears = subtract(backupValid, sourceValid);
  const both = intersect(sourceValid, backupValid);
  const differing: PageRange[] = [];
  await forEachBounded(chunksOf(both), concurrency, async (chunk) => {
    for (const range of chunk.ranges) {
      const [a, b] = await Promise.all([
        downloadRange(source, range, policy),
        downloadRange(backup, range, policy),
      ]);
      differing.push(...differingPages(a, b, range.start));
    }
  });
  return { writes: normalize([...subtract(sourceValid, backupValid), ...differing]), clears };
}
