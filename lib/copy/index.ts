/**
 * Copies chunks of a source snapshot onto the backup blob and clears ranges on it. Guarantees:
 * every byte written is checked by the service (streamed: the source's range MD5 is verified
 * here and sent as the transactional MD5 of the Put Page; server-side: the service copies from
 * the snapshot itself); at most `concurrency` chunks, each ≤ 4 MiB, are in flight, so memory is
 * bounded by concurrency × 4 MiB; a chunk is idempotent (it writes absolute content), so repeating
 * one after a crash or a redelivery is harmless. Errors carry the chunk's index.
 *
 * Fencing: with a `fence`, every write (Put Page, Put Page From URL, clear) carries
 * `x-ms-if-sequence-number-eq: fence`. A run sets the backup blob's sequence number to its own
 * fence before it writes (lib/backup/run.ts), so a straggler of an earlier run — a redelivered or
 * orphaned chunk batch still in flight — is refused by the service with 412
 * SequenceNumberConditionNotMet instead of writing older bytes over the newer run's.
 */
import crypto from "node:crypto";
import type { PageBlobClient } from "@azure/storage-blob";
import type { CopyMode } from "../config";
import type { SourceAuthorization, StorageClients } from "../azure/clients";
import { errorInfo, isNotImplemented } from "../azure/errors";
import { withRetry, type RetryPolicy } from "../azure/retry";
import type { BlobLocation } from "../azure/urls";
import type { Chunk, PageRange } from "../ranges";

export interface CopySource {
  location: BlobLocation;
  snapshot: string;
}

export class ChunkError extends Error {
  constructor(
    readonly chunkIndex: number,
    override readonly cause: unknown,
  ) {
    super(`chunk ${chunkIndex} (bytes from ${chunkIndex * 4 * 1024 * 1024}): ${errorInfo(cause).message}`);
    this.name = "ChunkError";
  }
}

/** A fresh source credential is made when the current one is this old; SAS tokens live an hour. */
const SOURCE_AUTH_REFRESH_MS = 20 * 60_000;

export class PageCopier {
  private serverSide: boolean;
  private auth?: { value: Promise<SourceAuthorization>; at: number };
  readonly source: PageBlobClient;

  constructor(
    private readonly clients: StorageClients,
    private readonly from: CopySource,
    readonly backup: PageBlobClient,
    private readonly policy: RetryPolicy,
    mode: CopyMode,
    fence?: number,
  ) {
    this.conditions = fence === undefined ? undefined : { ifSequenceNumberEqualTo: fence };
    this.serverSide = mode !== "streamed";
    this.source = clients.pageBlob(from.location, from.snapshot);
    this.mode = mode;
  }
  private readonly mode: CopyMode;
  private readonly conditions?: { ifSequenceNumberEqualTo: number };

  /** Which path copies now: "server" until the endpoint refuses Put Page From URL in auto mode. */
  get path(): "server" | "streamed" {
    return this.serverSide ? "server" : "streamed";
  }

  private sourceAuth(): Promise<SourceAuthorization> {
    if (!this.auth || Date.now() - this.auth.at > SOURCE_AUTH_REFRESH_MS) {
      this.auth = {
        value: this.clients.sourceAuthorization(this.from.location, this.from.snapshot),
        at: Date.now(),
      };
    }
    return this.auth.value;
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
        await this.copyServerSide(range);
        return;
      } catch (err) {
        if (this.mode === "server" || !isNotImplemented(err)) throw err;
        // The endpoint has no Put Page From URL (Azurite answers 501): stream from now on.
        this.serverSide = false;
      }
    }
    await this.copyStreamed(range);
  }

  private async copyServerSide(range: PageRange): Promise<void> {
    const count = range.end - range.start;
    const auth = await this.sourceAuth();
    await withRetry(this.policy, () =>
      this.backup.uploadPagesFromURL(auth.url, range.start, range.start, count, {
        sourceAuthorization: auth.bearer ? { scheme: "Bearer", value: auth.bearer } : undefined,
        conditions: this.conditions,
      }),
    );
  }

  private async copyStreamed(range: PageRange): Promise<void> {
    const count = range.end - range.start;
    await withRetry(this.policy, async () => {
      const response = await this.source.download(range.start, count, { rangeGetContentMD5: true });
      const body = await readExactly(response.readableStreamBody, count);
      const md5 = crypto.createHash("md5").update(body).digest();
      if (response.contentMD5 && !Buffer.from(response.contentMD5).equals(md5)) {
        // Corrupted in transit: a 5xx-like failure, so the retry wrapper tries again.
        throw Object.assign(new Error(`MD5 mismatch reading bytes ${range.start}-${range.end - 1}`), {
          statusCode: 500,
        });
      }
      await this.backup.uploadPages(body, range.start, count, {
        transactionalContentMD5: md5,
        conditions: this.conditions,
      });
    });
  }

  /** Clears ranges on the backup blob (a clear may span any length); returns the bytes cleared. */
  async clear(ranges: PageRange[]): Promise<number> {
    let bytes = 0;
    for (const range of ranges) {
      const count = range.end - range.start;
      await withRetry(this.policy, () =>
        this.backup.clearPages(range.start, count, { conditions: this.conditions }),
      );
      bytes += count;
    }
    return bytes;
  }
}

async function readExactly(stream: NodeJS.ReadableStream | undefined, count: number): Promise<Buffer> {
  if (!stream) throw new Error("download returned no body");
  const buffer = Buffer.allocUnsafe(count);
  let offset = 0;
  for await (const piece of stream as AsyncIterable<Buffer>) {
    if (offset + piece.length > count)
      throw Object.assign(new Error("download longer than asked"), { statusCode: 500 });
    piece.copy(buffer, offset);
    offset += piece.length;
  }
  if (offset !== count) {
    throw Object.assign(new Error(`download ended after ${offset} of ${count} bytes`), {
      code: "ECONNRESET",
    });
  }
  return buffer;
}
