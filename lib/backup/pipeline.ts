/**
 * The copy stage of a run: listing pieces in, changes applied to the backup blob (or, past the
 * fan-out threshold, packed into chunk batches for queue workers), checkpoints out. Stages never
 * wait for each other without need (issue 8):
 *
 *   lister (lookahead spans) ─▶ plan (chunks, clears, compares; batches) ─▶ one work queue
 *                                                          (DISKDELTA_COPY_CONCURRENCY workers)
 *                                                                   │ done, in any order
 *                                                                   ▼
 *                                      checkpoint = the contiguous finished prefix + its counters
 *
 * Guarantees:
 * - chunks of any segment flow into the one bounded queue, so the configured concurrency is the
 *   real one on any layout (a scattered disk is not one copy at a time);
 * - a checkpoint records the offset below which every change is applied (inline) or sent in a
 *   batch (fan-out), with the counters of exactly that prefix, so a run killed at any instant
 *   resumes from there without a new full copy, without skipping anything, and counts the same
 *   as a run never killed;
 * - fan-out batches pack chunks from as many segments as it takes: every batch but the last of a
 *   run is full (DISKDELTA_BATCH_CHUNKS chunks or MAX_RANGES_PER_BATCH ranges); a planner that
 *   pauses at its time limit sends no partial batch — the chunks it held are planned again by
 *   the continuation;
 * - memory: the lister's lookahead, plus concurrency × 4 MiB of chunks, plus one batch.
 */
import { forEachBounded, PrefixTracker } from "../core/concurrency";
import type { Deps } from "../deps";
import { joinChunks, type ChunkCopier } from "../copy/copier";
import { compareRanges } from "../diff/compare";
import type { Listing } from "../diff/lister";
import { chunksOf, totalBytes, type Chunk, type PageRange, type WindowSet } from "../ranges";
import type { PageAddress } from "../storage/port";

/** The counters a run row carries; a checkpoint writes those of its prefix. */
export interface RunCounters {
  [name: string]: number;
  rangesWritten: number;
  rangesCleared: number;
  bytesPlanned: number;
  bytesCopied: number;
  bytesCleared: number;
  chunksTotal: number;
  chunksDone: number;
}

export const NO_COUNTS: RunCounters = {
  rangesWritten: 0,
  rangesCleared: 0,
  bytesPlanned: 0,
  bytesCopied: 0,
  bytesCleared: 0,
  chunksTotal: 0,
  chunksDone: 0,
};

/** A batch of chunks for queue workers. */
export interface PlannedBatch {
  batch: number;
  generation: number;
  chunks: Chunk[];
}

export interface FanoutPlan {
  /** Bytes to write up to which the planner copies by itself; past it, the rest fans out. */
  thresholdBytes: number;
  batchChunks: number;
  /** Already fanning out (a continuation): every write chunk goes to a batch. */
  active: boolean;
  /** Called once, before the first batch is sent (records the mode on the run). */
  activate(): Promise<void>;
  send(batch: PlannedBatch): Promise<void>;
  /** Epoch ms after which planning stops at the next piece. */
  deadline: number;
  generation: number;
  /** Number of the next batch (batches of earlier generations keep theirs). */
  nextBatch: number;
}

/**
 * Ranges per batch message, at most: a range is about 25 bytes of JSON, so 1,000 keep a message
 * near 25 KiB, far below the queue's 64 KiB limit even for fragmented chunks.
 */
export const MAX_RANGES_PER_BATCH = 1000;
/**
 * How often a checkpoint is written while work goes on: every few seconds, or once a segment's
 * worth of changes (DISKDELTA_SEGMENT_BYTES) has been applied since the last one, whichever comes
 * first. Re-doing that much after a crash is cheap; a table write per listing piece is not (an
 * unchanged 1 TiB disk would be thousands of them).
 */
const CHECKPOINT_INTERVAL_MS = 3000;

export interface Checkpoint {
  offset: number;
  counters: RunCounters;
  /** Batches (numbered from 0) wholly below `offset`: what a continuation need not send again. */
  batchesTotal?: number;
}

export interface StageOptions {
  deps: Deps;
  size: number;
  start: number;
  committed: RunCounters;
  copier: () => Promise<ChunkCopier>;
  /** For compare pieces: the two sides (source snapshot, backup blob). */
  compare?: { first: PageAddress; second: PageAddress };
  fanout?: FanoutPlan;
  /** Windows written or cleared, for the digests of the point this run seals. */
  touched?: WindowSet;
  checkpoint(c: Checkpoint): Promise<void>;
  onProgress?(position: number, live: RunCounters): void;
}

/** A planned chunk of a fan-out run: done (in the prefix) once every batch holding a part of it is sent. */
interface Owner {
  handle: object;
  parts: number;
  sent: number;
}

type Item =
  | { kind: "copy"; chunks: Chunk[]; handle: object }
  | { kind: "clear"; range: PageRange; handle: object }
  | { kind: "compare"; chunk: Chunk; handle: object }
  | { kind: "send"; batch: PlannedBatch; owners: Owner[] };

export type StageEnd = "done" | "paused";

function totalBytesOf(chunks: Chunk[]): number {
  let bytes = 0;
  for (const c of chunks) bytes += c.bytes;
  return bytes;
}

function splitChunk(chunk: Chunk): Chunk[] {
  if (chunk.ranges.length <= MAX_RANGES_PER_BATCH) return [chunk];
  // A window can hold up to 8,192 separate ranges; split such a chunk so one message stays small.
  const parts: Chunk[] = [];
  for (let i = 0; i < chunk.ranges.length; i += MAX_RANGES_PER_BATCH) {
    const ranges = chunk.ranges.slice(i, i + MAX_RANGES_PER_BATCH);
    parts.push({ index: chunk.index, ranges, bytes: totalBytes(ranges) });
  }
  return parts;
}

export class CopyStage {
  readonly prefix: PrefixTracker<RunCounters>;
  readonly live: RunCounters;
  private lastCheckpointAt = Date.now();
  private lastCheckpointOffset: number;
  private lastCheckpointBytes: number;
  private writing?: Promise<void>;
  private plannedBytes: number;
  private batch: { parts: Array<{ chunk: Chunk; owner: Owner }>; ranges: number } = { parts: [], ranges: 0 };
  private readonly sent: Array<{ number: number; lastStart: number }> = [];
  private batchesBefore: number;
  /** Batches go out one after another, in batch order, so the queue holds them as they were planned. */
  private sending: Promise<void> = Promise.resolve();

  constructor(private readonly o: StageOptions) {
    this.prefix = new PrefixTracker<RunCounters>(o.start, o.committed);
    this.live = { ...o.committed };
    this.lastCheckpointOffset = o.start;
    this.lastCheckpointBytes = this.appliedBytes();
    this.plannedBytes = o.committed.bytesPlanned;
    this.batchesBefore = o.fanout?.nextBatch ?? 0;
  }

  /** Applies (or fans out) every change in `listings`; "paused" when the fan-out deadline stopped planning. */
  async run(listings: AsyncIterable<Listing>): Promise<StageEnd> {
    const state = { paused: false };
    await forEachBounded(
      this.items(listings, state),
      Math.max(1, this.o.deps.config.copyConcurrency),
      (item) => this.work(item),
    );
    await this.checkpoint(true);
    return state.paused ? "paused" : "done";
  }

  /** The work items of the listings, in disk order; stops (paused) at the fan-out deadline. */
  private async *items(listings: AsyncIterable<Listing>, state: { paused: boolean }): AsyncGenerator<Item> {
    for await (const piece of listings) {
      if (this.o.fanout && Date.now() >= this.o.fanout.deadline && piece.start > this.o.start) {
        state.paused = true;
        return;
      }
      yield* this.plan(piece);
    }
    const last = this.flushBatch();
    if (last) yield last;
  }

  /** The items of one piece, registered in start order, then the piece's end as a marker. */
  private *plan(piece: Listing): Generator<Item> {
    const writes = chunksOf(piece.writes);
    const compares = chunksOf(piece.both);
    const clears = piece.clears[Symbol.iterator]();
    const pending: Array<{ start: number; make: () => Item | undefined }> = [];
    for (const group of joinChunks(writes))
      pending.push({ start: group[0].ranges[0].start, make: () => this.planWrite(group) });
    for (const chunk of compares)
      pending.push({
        start: chunk.ranges[0].start,
        make: () => ({ kind: "compare", chunk, handle: this.prefix.add(chunk.ranges[0].start) }),
      });
    for (let r = clears.next(); !r.done; r = clears.next()) {
      const range = r.value;
      pending.push({
        start: range.start,
        make: () => ({ kind: "clear", range, handle: this.prefix.add(range.start) }),
      });
    }
    pending.sort((a, b) => a.start - b.start);
    for (const p of pending) {
      const item = p.make();
      if (item) yield item;
      const full = this.fullBatch();
      if (full) yield full;
    }
    this.prefix.advance(piece.end, {
      rangesWritten: piece.writes.length,
      rangesCleared: piece.clears.length,
    });
    this.maybeCheckpoint();
  }

  /** A group of write chunks (joinChunks): one copy item, or (fanning out) parts of batches. */
  private planWrite(group: Chunk[]): Item | undefined {
    const bytes = totalBytesOf(group);
    this.plannedBytes += bytes;
    this.live.bytesPlanned += bytes;
    const fanout = this.o.fanout;
    if (fanout && (fanout.active || this.plannedBytes > fanout.thresholdBytes)) {
      for (const chunk of group) {
        const handle = this.prefix.add(chunk.ranges[0].start, { chunksTotal: 1, bytesPlanned: chunk.bytes });
        const parts = splitChunk(chunk);
        const owner: Owner = { handle, parts: parts.length, sent: 0 };
        for (const part of parts) {
          this.batch.parts.push({ chunk: part, owner });
          this.batch.ranges += part.ranges.length;
        }
      }
      return undefined;
    }
    const handle = this.prefix.add(group[0].ranges[0].start, {
      chunksTotal: group.length,
      bytesPlanned: bytes,
    });
    return { kind: "copy", chunks: group, handle };
  }

  /** A full batch, taken out of the accumulator, or undefined. */
  private fullBatch(): Item | undefined {
    const f = this.o.fanout;
    if (!f || this.batch.parts.length === 0) return undefined;
    if (this.batch.parts.length < f.batchChunks && this.batch.ranges < MAX_RANGES_PER_BATCH) return undefined;
    return this.takeBatch(f.batchChunks);
  }

  private flushBatch(): Item | undefined {
    return this.o.fanout && this.batch.parts.length > 0
      ? this.takeBatch(this.o.fanout.batchChunks)
      : undefined;
  }

  /** The first `n` chunks (and at most MAX_RANGES_PER_BATCH ranges) of the accumulator as one batch. */
  private takeBatch(n: number): Item {
    const f = this.o.fanout!;
    const taken: Array<{ chunk: Chunk; owner: Owner }> = [];
    let ranges = 0;
    while (this.batch.parts.length > 0 && taken.length < n) {
      const next = this.batch.parts[0];
      if (taken.length > 0 && ranges + next.chunk.ranges.length > MAX_RANGES_PER_BATCH) break;
      taken.push(this.batch.parts.shift()!);
      ranges += next.chunk.ranges.length;
    }
    this.batch.ranges -= ranges;
    const batch: PlannedBatch = {
      batch: f.nextBatch++,
      generation: f.generation,
      chunks: taken.map((t) => t.chunk),
    };
    return { kind: "send", batch, owners: taken.map((t) => t.owner) };
  }

  private async work(item: Item): Promise<void> {
    const o = this.o;
    switch (item.kind) {
      case "copy": {
        const copier = await o.copier();
        const bytes = await copier.copyChunks(item.chunks);
        for (const chunk of item.chunks) o.touched?.add(chunk.index);
        this.done(item.handle, { bytesCopied: bytes, chunksDone: item.chunks.length });
        break;
      }
      case "clear": {
        const copier = await o.copier();
        const bytes = await copier.clear(item.range);
        o.touched?.addRange(item.range);
        this.done(item.handle, { bytesCleared: bytes });
        break;
      }
      case "compare": {
        const sides = o.compare!;
        const compared = await compareRanges(o.deps.storage, sides.first, sides.second, item.chunk.ranges);
        let bytes = 0;
        let ranges = 0;
        for (const c of compared) {
          if (c.differing.length === 0) continue;
          const copier = await o.copier();
          bytes += await copier.writeFrom(c.data, c.range.start, c.differing);
          ranges += c.differing.length;
        }
        if (bytes > 0) o.touched?.add(item.chunk.index);
        const wrote = bytes > 0 ? 1 : 0;
        this.done(item.handle, {
          bytesCopied: bytes,
          bytesPlanned: bytes,
          rangesWritten: ranges,
          chunksTotal: wrote,
          chunksDone: wrote,
        });
        break;
      }
      case "send": {
        const send = this.sending.then(async () => {
          if (!o.fanout!.active) {
            o.fanout!.active = true;
            await o.fanout!.activate();
          }
          await o.fanout!.send(item.batch);
        });
        // A failed send fails the stage; the next ones are not attempted (the chain stays broken).
        this.sending = send;
        await send;
        this.sent.push({
          number: item.batch.batch,
          lastStart: item.batch.chunks[item.batch.chunks.length - 1].ranges[0].start,
        });
        for (const owner of item.owners) {
          if (++owner.sent === owner.parts) this.done(owner.handle, {});
        }
        break;
      }
    }
  }

  private done(handle: object, counts: Partial<RunCounters>): void {
    for (const [k, v] of Object.entries(counts)) this.live[k] += v as number;
    this.prefix.done(handle, counts);
    this.o.onProgress?.(this.prefix.prefix, this.live);
    this.maybeCheckpoint();
  }

  /** Bytes the prefix has applied or sent (the measure of work a crash would redo). */
  private appliedBytes(): number {
    const c = this.prefix.committed;
    return c.bytesPlanned + c.bytesCleared;
  }

  private maybeCheckpoint(): void {
    if (this.writing || this.prefix.prefix <= this.lastCheckpointOffset) return;
    const due =
      Date.now() - this.lastCheckpointAt >= CHECKPOINT_INTERVAL_MS ||
      this.appliedBytes() - this.lastCheckpointBytes >= this.o.deps.config.segmentBytes;
    if (!due) return;
    void this.checkpoint(false).catch(() => undefined);
  }

  /** Writes the current prefix (always, when `final`); one write at a time. */
  async checkpoint(final: boolean): Promise<void> {
    if (this.writing) await this.writing.catch(() => undefined);
    const offset = this.prefix.prefix;
    if (!final && offset <= this.lastCheckpointOffset) return;
    // The prefix and its counters are taken together, before any await: a consistent pair.
    const counters = { ...this.prefix.committed };
    const batchesTotal = this.o.fanout
      ? this.batchesBefore + this.sent.filter((b) => b.lastStart < offset).length
      : undefined;
    this.writing = this.o.checkpoint({ offset, counters, batchesTotal });
    try {
      await this.writing;
      this.lastCheckpointOffset = offset;
      this.lastCheckpointAt = Date.now();
      this.lastCheckpointBytes = counters.bytesPlanned + counters.bytesCleared;
    } finally {
      this.writing = undefined;
    }
  }
}
