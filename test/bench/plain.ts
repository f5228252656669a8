/**
 * The yardstick: the simplest correct and fast backup of a page blob that the Azure SDK allows,
 * written as a newcomer would, with nothing of the engine in it. One run:
 *
 *   1. snapshot the source (a consistent image to copy), read its size;
 *   2. one whole-blob listing, paged by continuation markers: the snapshot's valid ranges for a
 *      first backup, the diff against the previous run's snapshot for an incremental one;
 *   3. the copies, `concurrency` in flight: download ≤ 4 MiB → Put Page of the same bytes; and the
 *      clears the diff named, in the same pool (a clear is one request whatever its size);
 *   4. snapshot the target (the restore point), and delete the previous source snapshot.
 *
 * No checkpoints, no fence, no lineage, no retries beyond the SDK's own: what it lacks is what the
 * engine adds, and the bench prints how much that costs. `md5` makes it check what the engine
 * checks (the service's range MD5 of each download, the transactional MD5 of each Put Page).
 * Disk sizes do not change in the bench, so it never resizes the target.
 */
import crypto from "node:crypto";
import { BlobServiceClient, StorageSharedKeyCredential, type PageBlobClient } from "@azure/storage-blob";

const PUT_PAGE_MAX = 4 * 1024 * 1024;

export interface BlobRef {
  /** Service URL of the account, e.g. http://127.0.0.1:port/account (through the proxy). */
  serviceUrl: string;
  account: string;
  key: string;
  container: string;
  blob: string;
}

export interface PlainInput {
  source: BlobRef;
  target: BlobRef;
  /** The previous run's source snapshot: absent for a first backup. */
  base?: string;
  concurrency: number;
  md5: boolean;
}

export interface PlainResult {
  sourceSnapshot: string;
  backupSnapshot: string;
  bytesCopied: number;
  bytesCleared: number;
  /** Ranges to write and to clear as listed, and the listing's pages (requests). */
  writes: number;
  clears: number;
  listingPages: number;
}

function blobClient(ref: BlobRef): PageBlobClient {
  return new BlobServiceClient(ref.serviceUrl, new StorageSharedKeyCredential(ref.account, ref.key))
    .getContainerClient(ref.container)
    .getPageBlobClient(ref.blob);
}

/** The body into one buffer of the size asked for (no list of pieces, no concatenation). */
async function readBody(stream: NodeJS.ReadableStream | undefined, count: number): Promise<Buffer> {
  if (!stream) throw new Error("download returned no body");
  const body = Buffer.allocUnsafe(count);
  let filled = 0;
  for await (const piece of stream as AsyncIterable<Buffer>) {
    if (filled + piece.length > count) throw new Error(`download returned more than ${count} bytes`);
    piece.copy(body, filled);
    filled += piece.length;
  }
  if (filled !== count) throw new Error(`download returned ${filled} of ${count} bytes`);
  return body;
}

export async function plainBackup(input: PlainInput): Promise<PlainResult> {
  const source = blobClient(input.source);
  const target = blobClient(input.target);
  const sourceSnapshot = (await source.createSnapshot()).snapshot;
  if (!sourceSnapshot) throw new Error("the service returned no snapshot id");
  const snap = source.withSnapshot(sourceSnapshot);
  const size = (await snap.getProperties()).contentLength ?? 0;
  if (!input.base) await target.create(size);

  const writes: { start: number; end: number }[] = [];
  const clears: { start: number; end: number }[] = [];
  let listingPages = 0;
  const pages = input.base
    ? snap.listPageRangesDiff(0, size, input.base).byPage()
    : snap.listPageRanges(0, size).byPage();
  // Listings come sorted; adjacent ranges (Azurite lists separate writes apart) are merged so that
  // every copy moves as close to 4 MiB as the data allows.
  const append = (list: { start: number; end: number }[], start: number, end: number) => {
    const last = list[list.length - 1];
    if (last && last.end === start) last.end = end;
    else list.push({ start, end });
  };
  for await (const page of pages) {
    listingPages++;
    for (const r of page.pageRange ?? []) append(writes, r.start, r.end + 1);
    for (const r of page.clearRange ?? []) append(clears, r.start, r.end + 1);
  }

  type Job = { kind: "copy" | "clear"; at: number; count: number };
  function* jobs(): Generator<Job> {
    for (const r of writes) {
      for (let at = r.start; at < r.end; at += PUT_PAGE_MAX) {
        yield { kind: "copy", at, count: Math.min(PUT_PAGE_MAX, r.end - at) };
      }
    }
    for (const r of clears) yield { kind: "clear", at: r.start, count: r.end - r.start };
  }
  let bytesCopied = 0;
  let bytesCleared = 0;
  const queue = jobs();
  const worker = async () => {
    for (let next = queue.next(); !next.done; next = queue.next()) {
      const { kind, at, count } = next.value;
      if (kind === "clear") {
        await target.clearPages(at, count);
        bytesCleared += count;
        continue;
      }
      const response = await snap.download(at, count, { rangeGetContentMD5: input.md5 });
      const body = await readBody(response.readableStreamBody, count);
      let transactionalContentMD5: Uint8Array | undefined;
      if (input.md5) {
        transactionalContentMD5 = crypto.createHash("md5").update(body).digest();
        if (!response.contentMD5 || !Buffer.from(response.contentMD5).equals(transactionalContentMD5)) {
          throw new Error(`MD5 mismatch reading [${at}, ${at + count})`);
        }
      }
      await target.uploadPages(body, at, count, { transactionalContentMD5 });
      bytesCopied += count;
    }
  };
  await Promise.all(Array.from({ length: input.concurrency }, worker));

  const backupSnapshot = (await target.createSnapshot()).snapshot;
  if (!backupSnapshot) throw new Error("the service returned no snapshot id");
  if (input.base) await source.withSnapshot(input.base).delete();
  return {
    sourceSnapshot,
    backupSnapshot,
    bytesCopied,
    bytesCleared,
    writes: writes.length,
    clears: clears.length,
    listingPages,
  };
}
