/**
 * Writing, reading, building and checking the digests of a restore point (format.ts), over the
 * storage port. Building lists the point's valid ranges (the listing pipeline, so an empty region
 * costs a handful of calls) and reads only the windows that need it: every window with data for a
 * first point; for a later one, the windows the run touched, or whose valid ranges differ from the
 * previous point's digests — every other window holds the bytes it held in the previous point, so
 * its digest is carried over. Reads run `concurrency` windows at a time; digests are written in
 * disk order, a block at a time. Checking reads the point and compares it window by window with
 * the digests, naming the first difference in disk order.
 */
import crypto from "node:crypto";
import type { Logger } from "../core/logger";
import { bufferMd5 } from "../core/md5";
import { forEachOrdered } from "../core/concurrency";
import { validChunks, type ListerOptions } from "../diff/lister";
import {
  PAGE_SIZE,
  subtract,
  union,
  WINDOW_SIZE,
  type Chunk,
  type PageRange,
  type WindowSet,
} from "../ranges";
import type { PageAddress, PageStore } from "../storage/port";
import type { WrittenWindows } from "./written";
import type { BlobLocation } from "../storage/urls";
import {
  BLOCK_WINDOWS,
  blockId,
  decodeBlock,
  DigestFormatError,
  DIGEST_METADATA,
  encodeBlock,
  md5Of,
  sameRanges,
  type WindowDigest,
} from "./format";

export interface DigestMeta {
  diskId: string;
  pointId: string;
  backupSnapshot: string;
}

/** Writes digests window by window, in disk order, a block per BLOCK_WINDOWS windows. */
export class DigestWriter {
  private readonly ids: string[] = [];
  private windows: WindowDigest[] = [];
  private extentStart = 0;

  /** `meta` may be given at `finish` instead, when the snapshot is taken only after the last window. */
  constructor(
    private readonly storage: PageStore,
    readonly location: BlobLocation,
    private meta?: DigestMeta,
  ) {}

  async add(w: WindowDigest): Promise<void> {
    this.windows.push(w);
    if (this.windows.length >= BLOCK_WINDOWS) await this.flush((w.index + 1) * WINDOW_SIZE);
  }

  private async flush(extentEnd: number): Promise<void> {
    const body = encodeBlock({ extent: { start: this.extentStart, end: extentEnd }, windows: this.windows });
    const id = blockId(this.ids.length);
    await this.storage.putBlock(this.location, id, body);
    this.ids.push(id);
    this.windows = [];
    this.extentStart = extentEnd;
  }

  /** Writes the last block (up to `size`) and commits the blob with its metadata. */
  async finish(size: number, meta: DigestMeta | undefined = this.meta): Promise<void> {
    if (!meta) throw new Error(`digests ${this.location.url}: no metadata to commit them with`);
    if (this.windows.length > 0 || this.ids.length === 0 || this.extentStart < size) await this.flush(size);
    await this.storage.commitBlocks(this.location, this.ids, {
      [DIGEST_METADATA.disk]: meta.diskId,
      [DIGEST_METADATA.point]: meta.pointId,
      [DIGEST_METADATA.snapshot]: meta.backupSnapshot,
      [DIGEST_METADATA.size]: String(size),
    });
  }
}

/** What a reader found wrong with the digests blob itself (gone, for another snapshot). */
export type DigestsState = { ok: true; cursor: DigestCursor } | { ok: false; why: string; gone: boolean };

/**
 * Reads a digests blob block by block, in disk order. `claim(index)` is called with ascending
 * window indices (the windows a reader found with data) and returns that window's digest, plus
 * any digest windows it skipped — windows the digests have and the reader did not find: data gone.
 */
export class DigestCursor {
  private block = 0;
  private offset = 0;
  private pending: WindowDigest[] = [];
  private covered = 0;

  constructor(
    private readonly storage: PageStore,
    private readonly location: BlobLocation,
    private readonly blocks: Array<{ id: string; size: number }>,
    readonly size: number,
  ) {}

  private async load(): Promise<boolean> {
    if (this.block >= this.blocks.length) return false;
    const b = this.blocks[this.block++];
    const raw = await this.storage.readBlob(this.location, this.offset, b.size);
    this.offset += b.size;
    const { extent, windows } = decodeBlock(raw, `${this.location.url} block ${b.id}`);
    if (extent.start !== this.covered)
      throw new DigestFormatError(`${this.location.url}: extents are not contiguous at ${this.covered}`);
    this.covered = extent.end;
    this.pending.push(...windows);
    return true;
  }

  async claim(index: number): Promise<{ digest?: WindowDigest; skipped: WindowDigest[] }> {
    const skipped: WindowDigest[] = [];
    for (;;) {
      while (this.pending.length > 0 && this.pending[0].index < index) skipped.push(this.pending.shift()!);
      if (this.pending.length > 0) {
        if (this.pending[0].index === index) return { digest: this.pending.shift(), skipped };
        return { skipped };
      }
      if (!(await this.load())) return { skipped };
    }
  }

  /** The digest windows never claimed, and whether the blocks covered the whole disk. */
  async rest(): Promise<{ skipped: WindowDigest[]; complete: boolean }> {
    const skipped = [...this.pending];
    this.pending = [];
    while (await this.load()) {
      skipped.push(...this.pending);
      this.pending = [];
    }
    return { skipped, complete: this.covered === this.size };
  }
}

/** Opens a point's digests, checking they were made for `backupSnapshot` of `size` bytes. */
export async function openDigests(
  storage: PageStore,
  location: BlobLocation,
  backupSnapshot: string,
  size: number,
): Promise<DigestsState> {
  const found = await storage.blocks(location);
  if (!found) return { ok: false, why: `its digests ${location.url} are gone`, gone: true };
  const meta = found.metadata;
  if (meta[DIGEST_METADATA.snapshot] !== backupSnapshot || meta[DIGEST_METADATA.size] !== String(size)) {
    return {
      ok: false,
      gone: false,
      why: `the digests were recorded for backup snapshot ${meta[DIGEST_METADATA.snapshot]} of ${meta[DIGEST_METADATA.size]} bytes, the point names ${backupSnapshot} of ${size} bytes`,
    };
  }
  return { ok: true, cursor: new DigestCursor(storage, location, found.blocks, size) };
}

export interface ReadOptions {
  concurrency: number;
  lister: ListerOptions;
}

/**
 * The MD5 of a window's valid ranges in order, read a range at a time and each body handed back
 * as soon as it is hashed, so building digests holds one body per window in flight.
 */
async function windowMd5(storage: PageStore, address: PageAddress, chunk: Chunk): Promise<Buffer> {
  if (chunk.ranges.length === 1) {
    // One range: the MD5 the store remembered from checking the read.
    const data = await storage.read(address, chunk.ranges[0], { pooled: true });
    const md5 = bufferMd5(data);
    storage.release?.(data);
    return md5;
  }
  const hash = crypto.createHash("md5");
  for (const range of chunk.ranges) {
    const data = await storage.read(address, range, { pooled: true });
    hash.update(data);
    storage.release?.(data);
  }
  return hash.digest();
}

export interface BuildResult {
  windowsRead: number;
  windowsCarried: number;
  /** Windows whose digest `written` knew: the run wrote their whole content in one part. */
  windowsKnown: number;
}

/**
 * Builds the digests of `point` (a backup snapshot of `size` bytes) into `writer`. With `previous`
 * (the previous point's digests, same size), windows neither in `touched` nor changed in their
 * valid ranges keep their previous digest; without it, every window with data is read.
 */
export async function buildDigests(
  storage: PageStore,
  point: PageAddress,
  size: number,
  writer: DigestWriter,
  options: ReadOptions & {
    previous?: DigestCursor;
    touched?: WindowSet;
    written?: WrittenWindows;
    log?: Logger;
  },
): Promise<BuildResult> {
  const result: BuildResult = { windowsRead: 0, windowsCarried: 0, windowsKnown: 0 };
  const planned = (async function* () {
    for await (const chunk of validChunks(storage, point, 0, size, options.lister)) {
      const before = options.previous ? (await options.previous.claim(chunk.index)).digest : undefined;
      if (before && !options.touched?.has(chunk.index) && sameRanges(before.ranges, chunk.ranges)) {
        result.windowsCarried++;
        yield { chunk, ready: before };
        continue;
      }
      const md5 = options.written?.digestOf(chunk.index, chunk.ranges);
      if (md5) result.windowsKnown++;
      yield { chunk, ready: md5 ? { index: chunk.index, md5, ranges: chunk.ranges } : undefined };
    }
  })();
  await forEachOrdered(
    planned,
    options.concurrency,
    async ({ chunk, ready }): Promise<WindowDigest> => {
      if (ready) return ready;
      result.windowsRead++;
      return {
        index: chunk.index,
        md5: await windowMd5(storage, point, chunk),
        ranges: chunk.ranges,
      };
    },
    (digest) => writer.add(digest),
  );
  await writer.finish(size);
  return result;
}

/** The first window (in disk order) where a point and its digests disagree. */
export interface DigestMismatch {
  start: number;
  end: number;
  kind: "valid-ranges" | "digest";
  detail: string;
}

function windowSpan(index: number, size: number): PageRange {
  return { start: index * WINDOW_SIZE, end: Math.min((index + 1) * WINDOW_SIZE, size) };
}

function rangesDiffer(recorded: PageRange[], actual: PageRange[]): PageRange | undefined {
  return union(subtract(recorded, actual), subtract(actual, recorded))[0];
}

/**
 * Compares one window's digest with what was read: undefined when equal, else the mismatch.
 * `parts` are the bytes of `chunk.ranges` in order.
 */
export function checkWindow(
  chunk: Chunk,
  digest: WindowDigest | undefined,
  parts: Buffer[],
  size: number,
): DigestMismatch | undefined {
  const span = windowSpan(chunk.index, size);
  if (!digest) {
    return {
      start: chunk.ranges[0].start,
      end: chunk.ranges[0].start + PAGE_SIZE,
      kind: "valid-ranges",
      detail: "valid in the restore point but empty in the recorded digests",
    };
  }
  const differing = rangesDiffer(digest.ranges, chunk.ranges);
  if (differing) {
    return {
      start: differing.start,
      end: differing.start + PAGE_SIZE,
      kind: "valid-ranges",
      detail: "the valid ranges differ from the recorded digests",
    };
  }
  if (!md5Of(parts).equals(digest.md5))
    return { ...span, kind: "digest", detail: "the window's MD5 differs from the recorded digest" };
  return undefined;
}

/** A digest window the reader never found: its data is gone from the point. */
export function missingWindow(digest: WindowDigest): DigestMismatch {
  const first = digest.ranges[0];
  return {
    start: first.start,
    end: first.start + PAGE_SIZE,
    kind: "valid-ranges",
    detail: "valid in the recorded digests but empty in the restore point",
  };
}
