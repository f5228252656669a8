/**
 * Listing as the head of the pipeline (issue 8): the changes of a disk region, in disk order, as
 * a stream of pieces that each cover a contiguous part of it, with `lookahead` listing calls in
 * flight ahead of whoever consumes them (the copies). Three kinds of listing: the valid ranges of
 * one blob (a first copy, restore, verify, digests), the service's page-range diff against a base
 * (pages written and pages cleared), and a compare of two blobs' valid ranges (a resync, Azurite,
 * verify against the source).
 *
 * Span sizes, measured and chosen:
 * - Listings stay paged (continuation markers, at most 10,000 ranges a page) and start at
 *   DISKDELTA_SEGMENT_BYTES (128 MiB), because Azure times out Get Page Ranges on a highly
 *   fragmented region however long the client waits; 150 MB is documented as safe in the worst case.
 * - Where a listing comes back sparse (at most SPARSE_RANGES ranges) the next span doubles, up to
 *   MAX_SPAN, and where it comes back dense (DENSE_RANGES or more) it halves back towards the
 *   base: on an empty or unchanged 1 TiB disk that is about 21 calls instead of 8,192, and on a
 *   fragmented region it is the base span again. Measured on the bench's 1 TiB disk with 256 MiB
 *   in 1 MiB pieces: see the README's performance section.
 * - A listing of a span larger than the base that times out (408, OperationTimedOut, our header
 *   deadline) is not repeated: the span is split in two and each half listed, down to the base
 *   span, where a timeout is retried like any 503.
 *
 * Memory: at most `lookahead` spans in flight, each holding at most two pages of ranges (or, for
 * a compare, one span's ranges of both sides), never the whole disk.
 */
import { Channel } from "../core/concurrency";
import { chunksOf, intersect, normalize, subtract, WINDOW_SIZE, type Chunk, type PageRange } from "../ranges";
import { isTimeout } from "../storage/errors";
import type { DiffBase, PageAddress, PageStore, RangePage } from "../storage/port";

/** One piece of a listing: every change in [start, end) is in it. */
export interface Listing {
  start: number;
  end: number;
  /** Valid ranges (valid), pages written (diff), valid only in the first blob (compare). */
  writes: PageRange[];
  /** Pages cleared (diff), valid only in the second blob (compare); empty for valid. */
  clears: PageRange[];
  /** Valid in both blobs (compare only): to be read on both sides and compared. */
  both: PageRange[];
  /** Who answered the first listing call (`Server`): Azurite answers diffs wrongly. */
  server?: string;
}

export type ListSpec =
  | { kind: "valid"; address: PageAddress }
  | { kind: "diff"; address: PageAddress; base: DiffBase }
  | { kind: "compare"; first: PageAddress; second: PageAddress };

export interface ListerOptions {
  /** The first and smallest span (DISKDELTA_SEGMENT_BYTES). */
  baseSpan: number;
  /** Listing calls in flight at once (DISKDELTA_LIST_LOOKAHEAD). */
  lookahead: number;
  maxSpan?: number;
  /** Ranges per page asked of the service. */
  pageSize?: number;
}

/** Azure's cap on ranges per Get Page Ranges response; asking for the cap keeps round trips few. */
export const LIST_PAGE_SIZE = 10_000;
/** A listing this sparse doubles the next span: the region is empty or nearly so. */
const SPARSE_RANGES = 64;
/** A listing this dense halves the next span: the region is fragmented, where Azure may time out. */
const DENSE_RANGES = 2_048;
/** 1 TiB: even an empty 32 TiB disk is listed in a few dozen calls, and a timeout halves it anyway. */
export const MAX_SPAN = 1024 ** 4;
/** Pages of one span held before its listing waits for the consumer. */
const PAGES_AHEAD = 2;

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export interface ListStats {
  calls: number;
}

/**
 * The pieces of [from, to) in order. Stops its listings when the consumer stops early. `stats`
 * counts the listing calls made (the bench prints them).
 */
export async function* listChanges(
  storage: PageStore,
  spec: ListSpec,
  from: number,
  to: number,
  options: ListerOptions,
  stats: ListStats = { calls: 0 },
): AsyncGenerator<Listing> {
  const base = Math.max(WINDOW_SIZE, alignUp(options.baseSpan, WINDOW_SIZE));
  const maxSpan = Math.max(base, options.maxSpan ?? MAX_SPAN);
  const pageSize = options.pageSize ?? LIST_PAGE_SIZE;
  let span = base;
  let next = from;
  const tasks: Array<{ channel: Channel<Listing>; done: Promise<void> }> = [];

  const adapt = (ranges: number, timedOut: boolean) => {
    if (timedOut || ranges >= DENSE_RANGES) span = Math.max(base, span / 2);
    else if (ranges <= SPARSE_RANGES) span = Math.min(maxSpan, span * 2);
  };

  const listPage = (
    start: number,
    end: number,
    marker: string | undefined,
    splittable: boolean,
    address?: PageAddress,
  ): Promise<RangePage> => {
    stats.calls++;
    const options = { marker, maxResults: pageSize, splitOnTimeout: splittable };
    const range = { start, end };
    switch (spec.kind) {
      case "valid":
        return storage.listRanges(spec.address, range, options);
      case "diff":
        return storage.listDiff(spec.address, range, spec.base, options);
      case "compare":
        return storage.listRanges(address!, range, options);
    }
  };

  /** Lists [start, end) into `out`, page by page (valid, diff) or whole (compare); splits on a timeout. */
  const listSpan = async (
    start: number,
    end: number,
    out: Channel<Listing>,
    server: { value?: string },
  ): Promise<number> => {
    const splittable = end - start > base;
    const split = async (at: number): Promise<number> => {
      const mid = Math.min(end, Math.max(at + base, alignUp(at + (end - at) / 2, WINDOW_SIZE)));
      const left = await listSpan(at, mid, out, server);
      return left + (mid < end ? await listSpan(mid, end, out, server) : 0);
    };
    if (spec.kind === "compare") {
      let pages: [RangePage[], RangePage[]];
      try {
        pages = await Promise.all(
          [spec.first, spec.second].map((a) => allPages(start, end, splittable, a)) as [
            Promise<RangePage[]>,
            Promise<RangePage[]>,
          ],
        );
      } catch (err) {
        if (splittable && isTimeout(err)) {
          adapt(0, true);
          return split(start);
        }
        throw err;
      }
      const first = normalize(pages[0].flatMap((p) => p.ranges));
      const second = normalize(pages[1].flatMap((p) => p.ranges));
      server.value ??= pages[0][0]?.server;
      await out.push({
        start,
        end,
        writes: subtract(first, second),
        clears: subtract(second, first),
        both: intersect(first, second),
        server: server.value,
      });
      return first.length + second.length;
    }
    let cursor = start;
    let marker: string | undefined;
    let ranges = 0;
    do {
      let page: RangePage;
      try {
        page = await listPage(start, end, marker, splittable);
      } catch (err) {
        if (splittable && isTimeout(err) && end - cursor > base) {
          adapt(0, true);
          return ranges + (await split(cursor));
        }
        throw err;
      }
      server.value ??= page.server;
      marker = page.next;
      ranges += page.ranges.length + page.clears.length;
      let coveredTo = end;
      if (marker) {
        coveredTo = cursor;
        for (const r of page.ranges) coveredTo = Math.max(coveredTo, r.end);
        for (const r of page.clears) coveredTo = Math.max(coveredTo, r.end);
      }
      await out.push({
        start: cursor,
        end: coveredTo,
        writes: page.ranges,
        clears: page.clears,
        both: [],
        server: server.value,
      });
      cursor = coveredTo;
    } while (marker);
    return ranges;
  };

  const allPages = async (
    start: number,
    end: number,
    splittable: boolean,
    address: PageAddress,
  ): Promise<RangePage[]> => {
    const pages: RangePage[] = [];
    let marker: string | undefined;
    do {
      const page = await listPage(start, end, marker, splittable, address);
      pages.push(page);
      marker = page.next;
    } while (marker);
    return pages;
  };

  const server: { value?: string } = {};
  const spawn = () => {
    while (tasks.length < Math.max(1, options.lookahead) && next < to) {
      const start = next;
      const end = Math.min(to, alignUp(start + span, WINDOW_SIZE));
      next = end;
      const channel = new Channel<Listing>(PAGES_AHEAD);
      const done = listSpan(start, end, channel, server).then(
        (ranges) => {
          adapt(ranges, false);
          channel.close();
        },
        (err: unknown) => channel.fail(err),
      );
      tasks.push({ channel, done });
    }
  };

  try {
    spawn();
    while (tasks.length > 0) {
      const task = tasks[0];
      for await (const piece of task.channel) {
        yield piece;
        spawn();
      }
      await task.done;
      tasks.shift();
      spawn();
    }
  } finally {
    for (const t of tasks) t.channel.cancel();
  }
}

/**
 * The chunks (one per 4 MiB window, its ranges in order) of a stream of range lists in disk order,
 * merging a window whose ranges arrive in two pieces. Holds one window's ranges at a time.
 */
export async function* windowChunks(pieces: AsyncIterable<PageRange[]>): AsyncGenerator<Chunk> {
  let current: Chunk | undefined;
  for await (const ranges of pieces) {
    for (const chunk of chunksOf(ranges)) {
      if (current && current.index === chunk.index) {
        const last = current.ranges[current.ranges.length - 1];
        const first = chunk.ranges[0];
        if (last.end === first.start) {
          last.end = first.end;
          current.ranges.push(...chunk.ranges.slice(1));
        } else current.ranges.push(...chunk.ranges);
        current.bytes += chunk.bytes;
        continue;
      }
      if (current) yield current;
      current = chunk;
    }
  }
  if (current) yield current;
}

/** The valid ranges of one blob in [from, to), as window chunks, listed ahead. */
export function validChunks(
  storage: PageStore,
  address: PageAddress,
  from: number,
  to: number,
  options: ListerOptions,
  stats?: ListStats,
): AsyncGenerator<Chunk> {
  return windowChunks(
    (async function* () {
      for await (const piece of listChanges(storage, { kind: "valid", address }, from, to, options, stats))
        yield piece.writes;
    })(),
  );
}

/** The lister's options from the settings: base span DISKDELTA_SEGMENT_BYTES, lookahead DISKDELTA_LIST_LOOKAHEAD. */
export function listerOptionsOf(config: { segmentBytes: number; listLookahead: number }): ListerOptions {
  return { baseSpan: config.segmentBytes, lookahead: config.listLookahead };
}
