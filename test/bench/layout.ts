/**
 * What the bench writes and how it knows what changed: a seeded random source, half-open byte
 * extents with the few set operations the bench needs, the two disk layouts (dense and scattered),
 * the workload between a first and an incremental backup, and a byte-for-byte comparison of a
 * restore point with its source snapshot. Plain SDK only, and no code shared with lib/ (the bench
 * measures the engine, so it must not reuse the engine's range algebra to judge it).
 *
 * Everything here talks to Azurite directly (not through the counting proxies), so that writing
 * the data and checking the results never appear in the request counts of a contender.
 */
import crypto from "node:crypto";
import type { PageBlobClient } from "@azure/storage-blob";

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const PAGE = 512;
/** Put Page's limit: every write here is one request of at most this. */
export const PUT_PAGE_MAX = 4 * MiB;

/** Half-open [start, end) in bytes, page-aligned. */
export interface Extent {
  start: number;
  end: number;
}

/** mulberry32: small, fast, and the same sequence on every machine for a seed. */
export function seeded(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)) };
}
export type Rng = ReturnType<typeof seeded>;

// ---------------------------------------------------------------------------------------------
// Extents

export function normalize(list: Extent[]): Extent[] {
  const sorted = list.filter((e) => e.end > e.start).sort((a, b) => a.start - b.start);
  const out: Extent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last && e.start <= last.end) last.end = Math.max(last.end, e.end);
    else out.push({ start: e.start, end: e.end });
  }
  return out;
}

/** Both normalized. */
export function intersect(a: Extent[], b: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (let i = 0, j = 0; i < a.length && j < b.length;) {
    const start = Math.max(a[i].start, b[j].start);
    const end = Math.min(a[i].end, b[j].end);
    if (start < end) out.push({ start, end });
    if (a[i].end < b[j].end) i++;
    else j++;
  }
  return out;
}

/** a minus b, both normalized. */
export function subtract(a: Extent[], b: Extent[]): Extent[] {
  const out: Extent[] = [];
  let j = 0;
  for (const e of a) {
    let cursor = e.start;
    while (j < b.length && b[j].end <= cursor) j++;
    for (let k = j; k < b.length && b[k].start < e.end; k++) {
      if (b[k].start > cursor) out.push({ start: cursor, end: b[k].start });
      cursor = Math.max(cursor, b[k].end);
    }
    if (cursor < e.end) out.push({ start: cursor, end: e.end });
  }
  return out;
}

export function bytesOf(list: Extent[]): number {
  return list.reduce((sum, e) => sum + (e.end - e.start), 0);
}

/** Valid ranges of a blob or snapshot, merged (Azurite lists adjacent writes apart). One whole-blob listing. */
export async function validRanges(blob: PageBlobClient, size: number): Promise<Extent[]> {
  const found: Extent[] = [];
  for await (const page of blob.listPageRanges(0, size).byPage()) {
    for (const r of page.pageRange ?? []) found.push({ start: r.start, end: r.end + 1 });
  }
  return normalize(found);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Fresh random bytes at [start, end) in ≤ 4 MiB Put Pages (random, so a compare can never call them unchanged). */
export async function writeRandom(blob: PageBlobClient, start: number, end: number): Promise<void> {
  for (let at = start; at < end; at += PUT_PAGE_MAX) {
    const count = Math.min(PUT_PAGE_MAX, end - at);
    await blob.uploadPages(crypto.randomBytes(count), at, count);
  }
}

/** Several writes at once: generation is not measured, only made quick. */
async function writeAll(blob: PageBlobClient, extents: Extent[], parallel = 4): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < extents.length) {
        const e = extents[next++];
        await writeRandom(blob, e.start, e.end);
      }
    }),
  );
}

const alignDown = (n: number) => Math.floor(n / PAGE) * PAGE;

/** Fill extents of the dense layout: 64 KiB (a small file) to 16 MiB (a large one). */
const EXTENT_MIN = 64 * KiB;
const EXTENT_MAX = 16 * MiB;

/**
 * The dense layout (the bench's original disk): about `fill` of the disk written, in extents of
 * 64 KiB-16 MiB separated by holes, so the first copy must skip empty ranges as on a real disk.
 */
export async function fillDense(blob: PageBlobClient, size: number, fill: number, rng: Rng): Promise<void> {
  const extents: Extent[] = [];
  for (let at = 0; at < size;) {
    const length = Math.min(rng.int(EXTENT_MIN / PAGE, EXTENT_MAX / PAGE) * PAGE, size - at);
    extents.push({ start: at, end: at + length });
    // A hole whose mean keeps written / size ≈ fill.
    const meanGap = (length * (1 - fill)) / fill;
    at += length + alignDown(rng.next() * 2 * meanGap);
  }
  await writeAll(blob, extents);
}

/**
 * The scattered layout: `pieces` pieces of `piece` bytes spread evenly over the disk, one in each
 * of `pieces` equal slices at a random page-aligned offset inside its slice (so pieces do not all
 * start on a 4 MiB window boundary, as files on a real disk do not). Only the data is written: the
 * rest of the blob is never touched, and Azurite stores it sparsely.
 */
export async function fillScattered(
  blob: PageBlobClient,
  size: number,
  pieces: number,
  piece: number,
  rng: Rng,
): Promise<void> {
  const slice = alignDown(size / pieces);
  const extents: Extent[] = [];
  for (let i = 0; i < pieces; i++) {
    const start = i * slice + alignDown(rng.next() * (slice - piece));
    extents.push({ start, end: start + piece });
  }
  await writeAll(blob, extents);
}

export interface Workload {
  /** Every extent written (fresh random bytes) and cleared, as issued. */
  written: Extent[];
  cleared: Extent[];
}

/**
 * The change between the two backups, `writeBytes` written and `clearBytes` cleared in pieces of
 * `piece` bytes, interleaved at random. Half of the writes overwrite existing data (files being
 * changed) and half land anywhere on the disk (new files; on the scattered layout almost always in
 * empty space); every clear hits data that existed at the base (files deleted and TRIMmed), since
 * a clear of empty pages changes nothing.
 */
export async function applyWorkload(
  blob: PageBlobClient,
  size: number,
  base: Extent[],
  writeBytes: number,
  clearBytes: number,
  piece: number,
  rng: Rng,
): Promise<Workload> {
  const dataBytes = bytesOf(base);
  /** A page-aligned offset uniformly inside the base's data. */
  const inData = (): number => {
    let offset = alignDown(rng.next() * dataBytes);
    for (const e of base) {
      if (offset < e.end - e.start) return e.start + offset;
      offset -= e.end - e.start;
    }
    return base[0]?.start ?? 0;
  };
  const ops: ("write" | "clear")[] = [
    ...Array<"write">(Math.round(writeBytes / piece)).fill("write"),
    ...Array<"clear">(Math.round(clearBytes / piece)).fill("clear"),
  ];
  for (let i = ops.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [ops[i], ops[j]] = [ops[j], ops[i]];
  }
  const work: Workload = { written: [], cleared: [] };
  for (const op of ops) {
    const anywhere = op === "write" && rng.next() < 0.5;
    const start = Math.min(anywhere ? alignDown(rng.next() * size) : inData(), size - piece);
    const extent = { start, end: start + piece };
    if (op === "write") {
      await writeRandom(blob, extent.start, extent.end);
      work.written.push(extent);
    } else {
      await blob.clearPages(extent.start, piece);
      work.cleared.push(extent);
    }
  }
  return work;
}

/**
 * What an ideal incremental moves, given the valid ranges before (v0) and after (v1) the workload:
 * pages written that are still valid (their bytes are new; a written page cleared later is not),
 * and pages valid at the base and not now.
 */
export function idealChange(
  v0: Extent[],
  v1: Extent[],
  work: Workload,
): { changed: number; mustClear: number } {
  return {
    changed: bytesOf(intersect(normalize(work.written), v1)),
    mustClear: bytesOf(subtract(v0, v1)),
  };
}

// ---------------------------------------------------------------------------------------------
// Checking

async function readAll(blob: PageBlobClient, at: number, count: number): Promise<Buffer> {
  const response = await blob.download(at, count);
  const pieces: Buffer[] = [];
  for await (const p of response.readableStreamBody as AsyncIterable<Buffer>) pieces.push(p);
  return Buffer.concat(pieces);
}

/** Compares a restore point with its source snapshot: valid ranges, then bytes 4 MiB at a time. Undefined when identical. */
export async function sameImage(
  a: PageBlobClient,
  b: PageBlobClient,
  size: number,
): Promise<string | undefined> {
  const [va, vb] = await Promise.all([validRanges(a, size), validRanges(b, size)]);
  if (JSON.stringify(va) !== JSON.stringify(vb)) {
    return `valid ranges differ (${va.length} ranges, ${bytesOf(va)} bytes vs ${vb.length}, ${bytesOf(vb)})`;
  }
  for (const r of va) {
    for (let at = r.start; at < r.end; at += PUT_PAGE_MAX) {
      const count = Math.min(PUT_PAGE_MAX, r.end - at);
      const [x, y] = await Promise.all([readAll(a, at, count), readAll(b, at, count)]);
      if (!x.equals(y)) return `bytes differ in [${at}, ${at + count})`;
    }
  }
  return undefined;
}
