/**
 * The digests of a restore point: for every 4 MiB window that holds data, its valid ranges and the
 * MD5 of their bytes in order. Valid ranges plus the MD5 of their bytes pin the window's whole
 * content (invalid pages read as zeros). Empty windows have no entry, so a 1 TiB disk holding
 * 256 MiB costs digests for its 256 MiB, not for its 1 TiB.
 *
 * Stored as a block blob beside the backup blob, `<backupBlob>.digests/<pointId>`, in the backup
 * container: blocks in disk order, each covering a contiguous extent of the disk and listing the
 * windows with data inside it (at most BLOCK_WINDOWS of them, so a reader holds one block at a
 * time), the extents together covering [0, size). Blob metadata names the disk, the point, its
 * backup snapshot and size, so digests are never applied to another snapshot.
 *
 * Block format: "DDG1", extent start and end (float64 LE), window count (u32), then per window:
 * index (u32), MD5 (16 bytes), range count (u32), ranges as (start page within the window, pages).
 */
import crypto from "node:crypto";
import { bufferMd5 } from "../core/md5";
import { PAGE_SIZE, WINDOW_SIZE, type PageRange } from "../ranges";
import { blobLocation, type BlobLocation } from "../storage/urls";

export interface WindowDigest {
  index: number;
  md5: Buffer;
  /** Absolute, normalized, inside the window. */
  ranges: PageRange[];
}

export interface DigestBlock {
  extent: PageRange;
  windows: WindowDigest[];
}

/** Windows per block: 4,096 windows (16 GiB of data) is at most a few hundred KiB of block. */
export const BLOCK_WINDOWS = 4096;
/** Identifies the block format; a reader refuses anything else instead of misreading it. */
const MAGIC = "DDG1";

export const DIGEST_METADATA = {
  disk: "diskdeltadisk",
  point: "diskdeltapoint",
  snapshot: "diskdeltasnapshot",
  size: "diskdeltasize",
} as const;

/** Where a point's digests live: `<backupBlob>.digests/<pointId>` in the backup container. */
export function digestsLocation(backup: BlobLocation, pointId: string): BlobLocation {
  return blobLocation(backup, backup.container, `${backup.blob}.digests/${pointId}`);
}

/** The MD5 of `parts` in order; of one part, the one the storage port remembered from reading it. */
export function md5Of(parts: Buffer[]): Buffer {
  if (parts.length === 1) return bufferMd5(parts[0]);
  const h = crypto.createHash("md5");
  for (const p of parts) h.update(p);
  return h.digest();
}

export function encodeBlock(block: DigestBlock): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(24);
  head.write(MAGIC, 0, "ascii");
  head.writeDoubleLE(block.extent.start, 4);
  head.writeDoubleLE(block.extent.end, 12);
  head.writeUInt32LE(block.windows.length, 20);
  parts.push(head);
  for (const w of block.windows) {
    const rec = Buffer.alloc(24 + w.ranges.length * 8);
    rec.writeUInt32LE(w.index, 0);
    w.md5.copy(rec, 4);
    rec.writeUInt32LE(w.ranges.length, 20);
    const windowStart = w.index * WINDOW_SIZE;
    w.ranges.forEach((r, i) => {
      rec.writeUInt32LE((r.start - windowStart) / PAGE_SIZE, 24 + i * 8);
      rec.writeUInt32LE((r.end - r.start) / PAGE_SIZE, 28 + i * 8);
    });
    parts.push(rec);
  }
  return Buffer.concat(parts);
}

/** Digests that do not decode: damaged at rest (a restore must treat its point as unchecked, not crash). */
export class DigestFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DigestFormatError";
  }
}

export function decodeBlock(buf: Buffer, what: string): DigestBlock {
  const bad = (why: string) => new DigestFormatError(`${what} is not a digest block: ${why}`);
  if (buf.length < 24 || buf.toString("ascii", 0, 4) !== MAGIC) throw bad("wrong magic");
  const extent = { start: buf.readDoubleLE(4), end: buf.readDoubleLE(12) };
  const count = buf.readUInt32LE(20);
  const windows: WindowDigest[] = [];
  let at = 24;
  for (let i = 0; i < count; i++) {
    if (at + 24 > buf.length) throw bad("truncated");
    const index = buf.readUInt32LE(at);
    const md5 = Buffer.from(buf.subarray(at + 4, at + 20));
    const n = buf.readUInt32LE(at + 20);
    at += 24;
    if (at + n * 8 > buf.length) throw bad("truncated");
    const ranges: PageRange[] = [];
    for (let j = 0; j < n; j++, at += 8) {
      const start = index * WINDOW_SIZE + buf.readUInt32LE(at) * PAGE_SIZE;
      ranges.push({ start, end: start + buf.readUInt32LE(at + 4) * PAGE_SIZE });
    }
    windows.push({ index, md5, ranges });
  }
  if (at !== buf.length) throw bad("trailing bytes");
  return { extent, windows };
}

/** Block ids must be base64 of equal length within a blob. */
export function blockId(n: number): string {
  return Buffer.from(`extent-${String(n).padStart(8, "0")}`).toString("base64");
}

export function sameRanges(a: PageRange[], b: PageRange[]): boolean {
  return a.length === b.length && a.every((r, i) => r.start === b[i].start && r.end === b[i].end);
}
