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

export class ChunkCopier {
  private serverSide: boolean;

  constructor(
    private readonly storage: PageStore,
    readonly source: PageAddress,
    readonly target: PageAddress,
    private readonly mode: CopyMode,
    private readonly fence?: number,
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

  private async copyRange(range: PageRange): Promise<void> {
    if (this.serverSide) {
      try {
        await this.storage.writeFrom(this.target, range.start, this.source, range.end - range.start, {
          fence: this.fence,
        });
        return;
      } catch (err) {
        if (this.mode === "server" || !isNotImplemented(err)) throw err;
        // The endpoint has no Put Page From URL (Azurite answers 501): stream from now on.
        this.serverSide = false;
      }
    }
    const data = await this.storage.read(this.source, range);
    await this.storage.write(this.target, range.start, data, { fence: this.fence });
  }

  /** Writes pages of `data` (read from the source at `offset`) that are named in `ranges`; returns the bytes. */
  async writeFrom(data: Buffer, offset: number, ranges: PageRange[]): Promise<number> {
    let bytes = 0;
    for (const r of ranges) {
      await this.storage.write(this.target, r.start, data.subarray(r.start - offset, r.end - offset), {
        fence: this.fence,
      });
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
