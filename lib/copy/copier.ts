/**
 * Copies chunks of a source snapshot onto a target page blob and clears ranges on it. Guarantees:
 * every byte written is checked by the service (streamed: the source's range MD5 is checked by the
 * storage port on the way in and a transactional MD5 sent on the way out; server-side: the service
 * copies from the snapshot itself); a chunk is idempotent (it writes absolute content), so
 * repeating one after a crash or a redelivery is harmless; with a `fence`, every write carries
 * the writer's sequence number, so a straggler of an earlier run is refused with 412 instead of
 * writing older bytes over a newer run's. Errors carry the chunk's window.
 */
import type { CopyMode } from "../config/settings";
import { errorInfo } from "../core/retry";
import { WINDOW_SIZE, type Chunk, type PageRange } from "../ranges";
import { isNotImplemented } from "../storage/errors";
import type { PageAddress, PageStore } from "../storage/port";

export class ChunkError extends Error {
  constructor(
    readonly chunkIndex: number,
    override readonly cause: unknown,
  ) {
    super(`window ${chunkIndex} (bytes from ${chunkIndex * WINDOW_SIZE}): ${errorInfo(cause).message}`);
    this.name = "ChunkError";
  }
}

/** Bytes and requests a copier spent, for the run's counters and the bench. */
export interface CopyCounters {
  bytesWritten: number;
  bytesCleared: number;
}

/**
 * Whether an endpoint copies server-side, learnt once per store and target endpoint (not per
 * copier: a fan-out worker builds one copier per message, and each would otherwise spend a refused
 * request to learn it again). A pending entry is the first copy trying it; others wait for it.
 */
const serverCopy = new WeakMap<PageStore, Map<string, Promise<boolean> | boolean>>();

function endpointOf(a: PageAddress): string {
  if (a.kind === "sas") return `sas:${a.label}`;
  try {
    return new URL(a.location.url).origin;
  } catch {
    return a.location.url;
  }
}

/**
 * Consecutive chunks grouped where a range runs on across a window boundary and the joined range
 * still fits one request (4 MiB): such a range is then copied by one read and one write instead of
 * two of each. Chunks stay the unit of checkpoints and digests; a group is only the unit of work.
 * On a scattered disk a quarter of 1 MiB extents cross a boundary; on a dense one, only extents
 * that end a little past one.
 */
/** Chunks in one group at most: a group is copied by one worker, so long chains would serialize. */
const MAX_GROUP = 4;

export function joinChunks(chunks: Iterable<Chunk>): Chunk[][] {
  const groups: Chunk[][] = [];
  let group: Chunk[] | undefined;
  /** The last request of the current group, as requestsOf forms it. */
  let last: PageRange | undefined;
  for (const chunk of chunks) {
    const head = chunk.ranges[0];
    const prev = group?.[group.length - 1];
    const joined =
      group !== undefined &&
      group.length < MAX_GROUP &&
      prev !== undefined &&
      prev.index + 1 === chunk.index &&
      last !== undefined &&
      head !== undefined &&
      last.end === head.start &&
      head.end - last.start <= WINDOW_SIZE;
    if (joined) group!.push(chunk);
    else {
      groups.push((group = [chunk]));
      last = undefined;
    }
    for (const r of chunk.ranges) {
      last =
        last && last.end === r.start && r.end - last.start <= WINDOW_SIZE
          ? { start: last.start, end: r.end }
          : { start: r.start, end: r.end };
    }
  }
  return groups;
}

/** The ranges of a group as requests: ranges touching across a window boundary joined while they fit 4 MiB. */
export function requestsOf(group: Chunk[]): PageRange[] {
  const out: PageRange[] = [];
  for (const chunk of group) {
    for (const r of chunk.ranges) {
      const last = out[out.length - 1];
      if (last && last.end === r.start && r.end - last.start <= WINDOW_SIZE) last.end = r.end;
      else out.push({ start: r.start, end: r.end });
    }
  }
  return out;
}

/** Told of every write that passed through this process, once the service accepted it. */
export interface WriteSink {
  wrote(range: PageRange, data: Buffer): void;
}

export class ChunkCopier {
  private serverSide: boolean;

  /** `sink`: told of each streamed write (the sealed point's digests reuse the bytes' MD5s). */
  constructor(
    private readonly storage: PageStore,
    readonly source: PageAddress,
    readonly target: PageAddress,
    private readonly mode: CopyMode,
    private readonly fence?: number,
    private readonly sink?: WriteSink,
  ) {
    this.serverSide = mode !== "streamed";
  }

  /** Which path copies now: "server" until the endpoint refuses Put Page From URL in auto mode. */
  get path(): "server" | "streamed" {
    return this.serverSide ? "server" : "streamed";
  }

  /** Copies one chunk; returns the bytes written. */
  async copyChunk(chunk: Chunk): Promise<number> {
    try {
      let bytes = 0;
      for (const range of chunk.ranges) {
        await this.copyRange(range);
        bytes += range.end - range.start;
      }
      return bytes;
    } catch (err) {
      throw err instanceof ChunkError ? err : new ChunkError(chunk.index, err);
    }
  }

  /** Copies a group of chunks (joinChunks), joined ranges as one request; returns the bytes written. */
  async copyChunks(group: Chunk[]): Promise<number> {
    if (group.length === 1) return this.copyChunk(group[0]);
    try {
      let bytes = 0;
      for (const range of requestsOf(group)) {
        await this.copyRange(range);
        bytes += range.end - range.start;
      }
      return bytes;
    } catch (err) {
      throw err instanceof ChunkError ? err : new ChunkError(group[0].index, err);
    }
  }

  private async copyRange(range: PageRange): Promise<void> {
    if (this.mode === "server") return this.writeFromSource(range);
    if (this.serverSide && (await this.copiedServerSide(range))) return;
    await this.stream(range);
  }

  /**
   * Auto mode: copies `range` server-side and answers true if the endpoint can, or answers false
   * when it cannot (Azurite answers 501), learning that once for every copier on this store.
   */
  private async copiedServerSide(range: PageRange): Promise<boolean> {
    let known = serverCopy.get(this.storage);
    if (!known) serverCopy.set(this.storage, (known = new Map()));
    const key = endpointOf(this.target);
    for (;;) {
      const state = known.get(key);
      if (state instanceof Promise) {
        // Another copy is finding out; if it failed for another reason, find out here.
        await state.catch(() => undefined);
        continue;
      }
      if (state === false) {
        this.serverSide = false;
        return false;
      }
      if (state === true) {
        await this.writeFromSource(range);
        return true;
      }
      const probe = this.writeFromSource(range).then(
        () => true,
        (err: unknown) => {
          if (isNotImplemented(err)) return false;
          throw err;
        },
      );
      known.set(key, probe);
      try {
        const works = await probe;
        known.set(key, works);
        if (!works) this.serverSide = false;
        return works;
      } catch (err) {
        known.delete(key);
        throw err;
      }
    }
  }

  private writeFromSource(range: PageRange): Promise<void> {
    return this.storage.writeFrom(this.target, range.start, this.source, range.end - range.start, {
      fence: this.fence,
    });
  }

  private async stream(range: PageRange): Promise<void> {
    const data = await this.storage.read(this.source, range, { pooled: true });
    await this.storage.write(this.target, range.start, data, { fence: this.fence });
    this.sink?.wrote(range, data);
    // Nothing holds the body now (the write is done, the sink hashed it): its memory serves the next read.
    this.storage.release?.(data);
  }

  /** Writes pages of `data` (read from the source at `offset`) that are named in `ranges`; returns the bytes. */
  async writeFrom(data: Buffer, offset: number, ranges: PageRange[]): Promise<number> {
    let bytes = 0;
    for (const r of ranges) {
      const part = data.subarray(r.start - offset, r.end - offset);
      await this.storage.write(this.target, r.start, part, { fence: this.fence });
      this.sink?.wrote(r, part);
      bytes += r.end - r.start;
    }
    return bytes;
  }

  /** Clears one range on the target (a clear may span any length); returns the bytes cleared. */
  async clear(range: PageRange): Promise<number> {
    await this.storage.clear(this.target, range, { fence: this.fence });
    return range.end - range.start;
  }
}
