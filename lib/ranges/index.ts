/**
 * Page-range algebra: pure functions (no I/O) over half-open, 512-byte-aligned byte ranges of a page blob.
 * Every function validates what it receives and throws an Error naming the offending range or argument
 * rather than returning something silently wrong. Every function that returns `PageRange[]` returns it
 * normalized (sorted, disjoint, non-adjacent, aligned, non-empty), except `segments`, whose pieces touch by
 * design; results are always fresh objects, so callers may mutate them without aliasing their inputs. `fromInclusive`/`toInclusive` are the only places that know
 * the SDK's inclusive `end`. `chunksOf` streams: it holds at most one window's ranges, so a fragmented 1 TiB
 * change set (millions of ranges, possibly produced lazily by a paged listing) never sits in memory at once.
 *
 * The two cases that are easy to get wrong:
 *
 * ```
 *   chunksOf: a range crossing a window boundary becomes two chunks
 *
 *   byte    0                     4 MiB                   8 MiB
 *           |       window 0        |       window 1        |
 *   range             [=========================)
 *   chunk 0           [=============)                          index 0, ends exactly at 4 MiB
 *   chunk 1                         [===========)              index 1, starts exactly at 4 MiB
 *
 *   subtract: removing a range from the middle of another carves a hole, leaving two ranges
 *
 *   a                 [=========================)
 *   b                        [==========)
 *   a - b             [======)          [=======)
 * ```
 */

/** Azure page size: every page-blob write, clear and listed range is aligned to it. */
export const PAGE_SIZE = 512;

/**
 * 4 MiB: the most one Put Page (or Put Page From URL) may carry, and the largest range for which the
 * service returns a range MD5, so one chunk is one checked request.
 */
export const WINDOW_SIZE = 4 * 1024 * 1024;

/** Half-open [start, end) in bytes, both multiples of PAGE_SIZE. */
export interface PageRange {
  start: number;
  end: number;
}

/** The SDK's and the REST API's form: `end` is the last byte, inclusive (a first page is {start:0,end:511}). */
export interface InclusiveRange {
  start: number;
  end: number;
}

/** Ranges to copy as one unit: all inside window `index`, i.e. [index*W, (index+1)*W). */
export interface Chunk {
  index: number;
  ranges: PageRange[];
  bytes: number;
}

function describe(r: { start: number; end: number }): string {
  return `[${r.start}, ${r.end})`;
}

function isAlignedOffset(n: number): boolean {
  // isSafeInteger rejects NaN, Infinity and fractions; beyond 2^53 offsets stop being exact.
  return Number.isSafeInteger(n) && n >= 0 && n % PAGE_SIZE === 0;
}

function assertPageMultiple(name: string, value: number): void {
  if (!isAlignedOffset(value) || value === 0) {
    throw new Error(`${name} must be a positive multiple of ${PAGE_SIZE} bytes, got ${value}`);
  }
}

export function assertAligned(r: PageRange): void {
  if (r === null || typeof r !== "object") {
    throw new Error(`page range must be an object with start and end, got ${String(r)}`);
  }
  if (!isAlignedOffset(r.start) || !isAlignedOffset(r.end)) {
    throw new Error(
      `page range ${describe(r)} is not ${PAGE_SIZE}-byte aligned (start and end must be non-negative integer multiples of ${PAGE_SIZE})`,
    );
  }
  if (r.start > r.end) {
    throw new Error(`page range ${describe(r)} has start after end`);
  }
}

export function fromInclusive(r: InclusiveRange): PageRange {
  const shown = `inclusive range {start: ${r.start}, end: ${r.end}}`;
  if (!isAlignedOffset(r.start)) {
    throw new Error(`${shown}: start is not a non-negative multiple of ${PAGE_SIZE}`);
  }
  if (!Number.isSafeInteger(r.end) || (r.end + 1) % PAGE_SIZE !== 0) {
    throw new Error(`${shown}: end + 1 is not a multiple of ${PAGE_SIZE} (end is inclusive, e.g. 511)`);
  }
  if (r.end < r.start) {
    throw new Error(`${shown}: end is before start`);
  }
  return { start: r.start, end: r.end + 1 };
}

/** An empty range has no inclusive form (it would need end = start - 1, which the service never sends). */
export function toInclusive(r: PageRange): InclusiveRange {
  assertAligned(r);
  if (r.start === r.end) {
    throw new Error(`page range ${describe(r)} is empty and has no inclusive form`);
  }
  return { start: r.start, end: r.end - 1 };
}

export function normalize(ranges: Iterable<PageRange>): PageRange[] {
  // Sorts references to the caller's objects and copies only what it returns, one allocation per output.
  const sorted: PageRange[] = [];
  for (const r of ranges) {
    assertAligned(r);
    if (r.start < r.end) sorted.push(r);
  }
  // Listings usually arrive sorted already, and the engine's merge sort is linear on sorted input.
  sorted.sort((x, y) => x.start - y.start);
  const out: PageRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    // `<=` merges adjacent ranges too: one write of [0,1024) beats two of [0,512) and [512,1024).
    if (last !== undefined && r.start <= last.end) {
      if (r.end > last.end) last.end = r.end;
    } else {
      out.push({ start: r.start, end: r.end });
    }
  }
  return out;
}

export function union(a: PageRange[], b: PageRange[]): PageRange[] {
  return normalize([...a, ...b]);
}

export function subtract(a: PageRange[], b: PageRange[]): PageRange[] {
  const left = normalize(a);
  const right = normalize(b);
  const out: PageRange[] = [];
  let j = 0;
  for (const r of left) {
    let start = r.start;
    // Ranges of b wholly before this one cannot touch any later range of a either (a is sorted).
    while (j < right.length && right[j].end <= start) j++;
    let k = j;
    while (k < right.length && right[k].start < r.end) {
      const hole = right[k];
      if (hole.start > start) out.push({ start, end: hole.start });
      start = hole.end;
      k++;
    }
    if (start < r.end) out.push({ start, end: r.end });
  }
  // Pieces come from disjoint, non-adjacent parts of a separated by holes, so they are already normalized.
  return out;
}

export function intersect(a: PageRange[], b: PageRange[]): PageRange[] {
  const left = normalize(a);
  const right = normalize(b);
  const out: PageRange[] = [];
  let i = 0;
  let j = 0;
  while (i < left.length && j < right.length) {
    const start = Math.max(left[i].start, right[j].start);
    const end = Math.min(left[i].end, right[j].end);
    if (start < end) out.push({ start, end });
    if (left[i].end < right[j].end) i++;
    else j++;
  }
  return out;
}

export function clip(ranges: PageRange[], start: number, end: number): PageRange[] {
  const bounds = { start, end };
  assertAligned(bounds);
  // Filter before normalizing so that clipping a long list to a small segment sorts only what survives.
  const kept: PageRange[] = [];
  for (const r of ranges) {
    assertAligned(r);
    const s = Math.max(r.start, start);
    const e = Math.min(r.end, end);
    if (s < e) kept.push({ start: s, end: e });
  }
  return normalize(kept);
}

/** Sums lengths as given: overlapping input is counted twice, so pass normalized ranges for a page count. */
export function totalBytes(ranges: Iterable<PageRange>): number {
  let total = 0;
  for (const r of ranges) {
    assertAligned(r);
    total += r.end - r.start;
  }
  return total;
}

export function* chunksOf(ranges: Iterable<PageRange>, windowSize: number = WINDOW_SIZE): Generator<Chunk> {
  assertPageMultiple("windowSize", windowSize);
  let current: Chunk | undefined;
  let previousEnd = 0;
  for (const r of ranges) {
    assertAligned(r);
    if (r.start === r.end) continue;
    // Streaming cannot sort, and overlapping input would copy pages twice with no error: refuse it.
    if (r.start < previousEnd) {
      throw new Error(
        `chunksOf needs sorted, disjoint ranges: ${describe(r)} starts before the previous range ended at ${previousEnd}`,
      );
    }
    previousEnd = r.end;
    let start = r.start;
    while (start < r.end) {
      const index = Math.floor(start / windowSize);
      const end = Math.min(r.end, (index + 1) * windowSize);
      if (current === undefined || current.index !== index) {
        if (current !== undefined) yield current;
        current = { index, ranges: [], bytes: 0 };
      }
      const last = current.ranges[current.ranges.length - 1];
      // Adjacent input ranges are accepted and merged, keeping each chunk's ranges normalized.
      if (last !== undefined && last.end === start) last.end = end;
      else current.ranges.push({ start, end });
      current.bytes += end - start;
      start = end;
    }
  }
  if (current !== undefined) yield current;
}

/**
 * Pages compared with one memcmp before looking at single pages. 64 KiB (128 pages): an unchanged block,
 * the common case, costs one native call instead of 128; a changed block is read at most twice, which
 * costs less than 128 calls' overhead.
 */
const COMPARE_BLOCK_SIZE = 64 * 1024;

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

export function differingPages(a: Uint8Array, b: Uint8Array, baseOffset: number): PageRange[] {
  if (a.byteLength !== b.byteLength) {
    throw new Error(`differingPages needs buffers of equal length, got ${a.byteLength} and ${b.byteLength}`);
  }
  if (a.byteLength % PAGE_SIZE !== 0) {
    throw new Error(`differingPages needs a length that is a multiple of ${PAGE_SIZE}, got ${a.byteLength}`);
  }
  if (!isAlignedOffset(baseOffset)) {
    throw new Error(
      `differingPages baseOffset must be a non-negative multiple of ${PAGE_SIZE}, got ${baseOffset}`,
    );
  }
  // Views, not copies: Buffer.compare with offsets runs memcmp without allocating a subarray per page.
  const x = asBuffer(a);
  const y = asBuffer(b);
  const length = x.byteLength;
  const out: PageRange[] = [];
  for (let block = 0; block < length; block += COMPARE_BLOCK_SIZE) {
    const blockEnd = Math.min(block + COMPARE_BLOCK_SIZE, length);
    if (x.compare(y, block, blockEnd, block, blockEnd) === 0) continue;
    for (let page = block; page < blockEnd; page += PAGE_SIZE) {
      const pageEnd = page + PAGE_SIZE;
      if (x.compare(y, page, pageEnd, page, pageEnd) === 0) continue;
      const start = baseOffset + page;
      const last = out[out.length - 1];
      if (last !== undefined && last.end === start) last.end = start + PAGE_SIZE;
      else out.push({ start, end: start + PAGE_SIZE });
    }
  }
  return out;
}

export function segments(size: number, segmentSize: number): PageRange[] {
  assertPageMultiple("segmentSize", segmentSize);
  if (!isAlignedOffset(size)) {
    throw new Error(
      `size must be a non-negative multiple of ${PAGE_SIZE} bytes (a page blob size), got ${size}`,
    );
  }
  const out: PageRange[] = [];
  for (let start = 0; start < size; start += segmentSize) {
    out.push({ start, end: Math.min(start + segmentSize, size) });
  }
  return out;
}

/**
 * A set of 4 MiB window indices of one disk, one bit each (32 KiB for 1 TiB): which windows a run
 * wrote or cleared, so the digests of its restore point are recomputed for those windows only.
 */
export class WindowSet {
  private readonly bits: Uint8Array;
  private counted = 0;

  constructor(readonly size: number) {
    this.bits = new Uint8Array(Math.ceil(Math.ceil(size / WINDOW_SIZE) / 8));
  }

  add(index: number): void {
    const byte = index >> 3;
    const bit = 1 << (index & 7);
    if (byte >= this.bits.length || this.bits[byte] & bit) return;
    this.bits[byte] |= bit;
    this.counted++;
  }

  /** Adds every window that [start, end) touches. */
  addRange(r: PageRange): void {
    if (r.end <= r.start) return;
    for (let w = Math.floor(r.start / WINDOW_SIZE); w * WINDOW_SIZE < r.end; w++) this.add(w);
  }

  has(index: number): boolean {
    return (this.bits[index >> 3] & (1 << (index & 7))) !== 0;
  }

  get count(): number {
    return this.counted;
  }
}
