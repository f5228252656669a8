/**
 * Verify: proves that a restore point holds what it claims. While the point's source snapshot
 * exists (it does for the base point; the engine deletes older ones), the point's backup snapshot
 * is compared with it segment by segment: the valid-range maps must be equal and the bytes of
 * every 4 MiB window must be equal. A point that passes gets its per-window digests recorded in
 * the backup account (see below), so it stays verifiable after its source snapshot is gone: then
 * the backup snapshot is checked against those digests. Guarantees:
 *
 * - a pass means: same size, same valid ranges, same bytes (against the source), or same valid
 *   ranges and the same MD5 per window as when the point was proved equal to its source (digests);
 * - a failure names the first differing range in disk order, narrowed to its first 512-byte page
 *   against the source, to its 4 MiB window against digests (nothing finer is stored);
 * - the result and time are recorded on the point row (`verifiedAt`, `verifyResult`); digests
 *   are recorded only for a point that passed against its source, never for one that failed;
 * - memory is bounded by concurrency × 2 × 4 MiB plus one segment's ranges and digests.
 *
 * Digests live in a block blob beside the backup blob, `<backupBlob>.digests/<pointId>`, in the
 * backup container: one block per extent of the disk (a segment, or several when the disk has
 * more segments than a blob has blocks), each listing the extent's windows with data as (window
 * index, MD5 of the window's valid bytes in order, the window's valid ranges). Valid ranges plus
 * the MD5 of their bytes pin the window's whole content (invalid pages read as zeros). A block
 * per extent lets a reader fetch one extent at a time, so reading digests is bounded like the
 * rest. Blob metadata names the disk, the point and its backup snapshot, so digests are never
 * applied to the wrong snapshot.
 */
import crypto from "node:crypto";
import type { BlockBlobClient, PageBlobClient } from "@azure/storage-blob";
import { isDiffRefusal, isNotFound } from "../azure/errors";
import { withRetry, type RetryPolicy } from "../azure/retry";
import { blobLocation, type BlobLocation } from "../azure/urls";
import { requireDisk } from "../backup/disks";
import { answersDiffsWrongly, diskLocations, retryPolicy, type EngineDeps } from "../backup/run";
import { forEachBounded } from "../concurrency";
import { downloadRange, serviceDiffSegment, validRangesSegment } from "../diff";
import { retryOnConflict, type DiskRecord, type RestorePointRecord } from "../lineage/types";
import {
  chunksOf,
  differingPages,
  intersect,
  normalize,
  PAGE_SIZE,
  segments,
  subtract,
  union,
  WINDOW_SIZE,
  type PageRange,
} from "../ranges";
import { holdPoint } from "./hold";
import { selectPoint } from "./points";

export type VerifyMethod = "source-snapshot" | "digests";

export interface Difference {
  /** The first differing page (source) or window (digests), [start, end). */
  start: number;
  end: number;
  /** The whole contiguous differing range the first page belongs to, where known. */
  range: PageRange;
  kind: "size" | "valid-ranges" | "bytes" | "digest";
  detail: string;
}

export interface VerifyResult {
  diskId: string;
  pointId: string;
  backupSnapshot: string;
  sourceSnapshot: string;
  method: VerifyMethod;
  ok: boolean;
  verifiedAt: string;
  /** Bytes of valid data read from the restore point. */
  bytesChecked: number;
  windowsChecked: number;
  firstDifference?: Difference;
  digestsUrl?: string;
  /** What is recorded as the point's `verifyResult`. */
  summary: string;
}

/** A verification that could not be made at all (no source snapshot and no digests, gone snapshot). */
export class UnverifiableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnverifiableError";
  }
}

/** Thrown by the CLI after printing a failed result, so the process exits non-zero. */
export class VerifyFailedError extends Error {
  constructor(readonly result: VerifyResult) {
    super(result.summary);
    this.name = "VerifyFailedError";
  }
}

/** Azure's limit of committed blocks per block blob; one block per extent must stay below it. */
const MAX_DIGEST_BLOCKS = 50_000;
/** Identifies the block format; a reader refuses anything else instead of misreading it. */
const DIGEST_MAGIC = "DDG1";
const DIGEST_METADATA = {
  disk: "diskdeltadisk",
  point: "diskdeltapoint",
  snapshot: "diskdeltasnapshot",
  size: "diskdeltasize",
} as const;
/** How often a point row update is retried when another writer (retention, a restore) changed it. */
const ROW_UPDATE_ATTEMPTS = 5;

interface WindowDigest {
  index: number;
  md5: Buffer;
  /** Absolute, normalized, inside the window and the extent. */
  ranges: PageRange[];
}

/** Where a point's digests live: `<backupBlob>.digests/<pointId>` in the backup container. */
export function digestsLocation(disk: DiskRecord, pointId: string): BlobLocation {
  const { backup } = diskLocations(disk);
  return blobLocation(backup, backup.container, `${backup.blob}.digests/${pointId}`);
}

function digestsBlob(deps: EngineDeps, loc: BlobLocation): BlockBlobClient {
  return deps.clients.container(loc).getBlockBlobClient(loc.blob);
}

/** Deletes a point's digests if there are any (retention calls it; a missing blob is success). */
export async function deleteDigests(deps: EngineDeps, disk: DiskRecord, pointId: string): Promise<void> {
  const loc = digestsLocation(disk, pointId);
  await withRetry(retryPolicy(deps.config, deps.log), () => digestsBlob(deps, loc).deleteIfExists());
}

/** The extents digests are kept by: segments, widened so a disk never needs more blocks than a blob holds. */
export function digestExtents(size: number, segmentBytes: number): PageRange[] {
  const count = Math.ceil(size / segmentBytes);
  const perBlock = Math.max(1, Math.ceil(count / (MAX_DIGEST_BLOCKS - 1)));
  return segments(size, segmentBytes * perBlock);
}

function encodeExtent(extent: PageRange, windows: WindowDigest[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4 + 8 + 8 + 4);
  head.write(DIGEST_MAGIC, 0, "ascii");
  head.writeDoubleLE(extent.start, 4);
  head.writeDoubleLE(extent.end, 12);
  head.writeUInt32LE(windows.length, 20);
  parts.push(head);
  for (const w of windows) {
    const rec = Buffer.alloc(4 + 16 + 4 + w.ranges.length * 8);
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

function decodeExtent(buf: Buffer, what: string): { extent: PageRange; windows: WindowDigest[] } {
  const bad = (why: string) => new Error(`${what} is not a digest block: ${why}`);
  if (buf.length < 24 || buf.toString("ascii", 0, 4) !== DIGEST_MAGIC) throw bad("wrong magic");
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
function blockId(n: number): string {
  return Buffer.from(`extent-${String(n).padStart(8, "0")}`).toString("base64");
}

function md5Of(parts: Buffer[]): Buffer {
  const h = crypto.createHash("md5");
  for (const p of parts) h.update(p);
  return h.digest();
}

/** The first page or range where two valid-range maps differ, or undefined when equal. */
function firstMapDifference(
  source: PageRange[],
  point: PageRange[],
  sourceName = "the source snapshot",
): Difference | undefined {
  const onlySource = subtract(source, point);
  const onlyPoint = subtract(point, source);
  const first = union(onlySource, onlyPoint)[0];
  if (!first) return undefined;
  const inSource = onlySource.some((r) => r.start <= first.start && first.start < r.end);
  const range = (inSource ? onlySource : onlyPoint).find(
    (r) => r.start <= first.start && first.start < r.end,
  )!;
  return {
    start: first.start,
    end: first.start + PAGE_SIZE,
    range,
    kind: "valid-ranges",
    detail: inSource
      ? `valid in ${sourceName} but empty in the restore point`
      : `valid in the restore point but empty in ${sourceName}`,
  };
}

function earliest(a: Difference | undefined, b: Difference | undefined): Difference | undefined {
  if (!a) return b;
  if (!b) return a;
  return b.start < a.start ? b : a;
}

function describeDifference(d: Difference): string {
  const page = `[${d.start}, ${d.end})`;
  const range =
    d.range.start === d.start && d.range.end === d.end ? "" : ` (in [${d.range.start}, ${d.range.end}))`;
  return `${d.kind === "digest" ? "window" : "page"} ${page}${range}: ${d.detail}`;
}

interface Scan {
  bytesChecked: number;
  windowsChecked: number;
  difference?: Difference;
}

/**
 * Reads the point's backup snapshot extent by extent, computing window digests and, when `against`
 * is given, comparing maps and bytes with it. Each clean extent's digests go to `stage`.
 */
async function scanPoint(
  deps: EngineDeps,
  point: PageBlobClient,
  size: number,
  policy: RetryPolicy,
  against: PageBlobClient | undefined,
  stage: (n: number, extent: PageRange, windows: WindowDigest[]) => Promise<void>,
): Promise<Scan> {
  const scan: Scan = { bytesChecked: 0, windowsChecked: 0 };
  const extents = digestExtents(size, deps.config.segmentBytes);
  for (const [n, extent] of extents.entries()) {
    const [pointValid, sourceValid] = await Promise.all([
      validRangesSegment(point, extent, policy),
      against ? validRangesSegment(against, extent, policy) : Promise.resolve(undefined),
    ]);
    let difference = sourceValid ? firstMapDifference(sourceValid, pointValid) : undefined;
    const readable = sourceValid ? intersect(sourceValid, pointValid) : pointValid;
    const windows: WindowDigest[] = [];
    await forEachBounded(chunksOf(readable), deps.config.copyConcurrency, async (chunk) => {
      const parts: Buffer[] = [];
      for (const range of chunk.ranges) {
        const [mine, theirs] = await Promise.all([
          downloadRange(point, range, policy),
          against ? downloadRange(against, range, policy) : Promise.resolve(undefined),
        ]);
        if (mine.length !== range.end - range.start)
          throw new Error(`short read of [${range.start}, ${range.end}) from ${point.url}`);
        scan.bytesChecked += mine.length;
        if (theirs && !mine.equals(theirs)) {
          const pages = theirs.length === mine.length ? differingPages(theirs, mine, range.start) : [range];
          const first = pages[0] ?? range;
          difference = earliest(difference, {
            start: first.start,
            end: first.start + PAGE_SIZE,
            range: first,
            kind: "bytes",
            detail: "bytes differ from the source snapshot",
          });
        }
        parts.push(mine);
      }
      scan.windowsChecked += 1;
      windows.push({ index: chunk.index, md5: md5Of(parts), ranges: chunk.ranges });
    });
    if (difference) {
      scan.difference = difference;
      return scan;
    }
    windows.sort((a, b) => a.index - b.index);
    await stage(n, extent, windows);
  }
  return scan;
}

/** Writes digests block by block as `scanPoint` produces them; `commit` makes them the blob's content. */
function digestWriter(deps: EngineDeps, disk: DiskRecord, point: RestorePointRecord, policy: RetryPolicy) {
  const loc = digestsLocation(disk, point.id);
  const blob = digestsBlob(deps, loc);
  const ids: string[] = [];
  return {
    url: loc.url,
    stage: async (n: number, extent: PageRange, windows: WindowDigest[]) => {
      if (n === 0) await withRetry(policy, () => deps.clients.container(loc).createIfNotExists());
      const body = encodeExtent(extent, windows);
      const id = blockId(n);
      await withRetry(policy, () => blob.stageBlock(id, body, body.length));
      ids.push(id);
    },
    commit: async (size: number) => {
      await withRetry(policy, () =>
        blob.commitBlockList(ids, {
          metadata: {
            [DIGEST_METADATA.disk]: disk.id,
            [DIGEST_METADATA.point]: point.id,
            [DIGEST_METADATA.snapshot]: point.backupSnapshot,
            [DIGEST_METADATA.size]: String(size),
          },
        }),
      );
    },
  };
}

/** A snapshot's size, or undefined when it is gone. */
async function snapshotSize(blob: PageBlobClient, policy: RetryPolicy): Promise<number | undefined> {
  try {
    return (await withRetry(policy, () => blob.getProperties())).contentLength ?? 0;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

async function pointSize(
  blob: PageBlobClient,
  point: RestorePointRecord,
  policy: RetryPolicy,
): Promise<number> {
  const size = await snapshotSize(blob, policy);
  if (size === undefined) {
    throw new UnverifiableError(
      `restore point ${point.id}: its backup snapshot ${point.backupSnapshot} is gone; nothing to verify`,
    );
  }
  return size;
}

/**
 * Records a point's digests by reading its whole backup snapshot (no comparison), and references
 * them from the point row. Costs one read of the point's valid data: not for every seal by default.
 */
export async function recordDigests(
  deps: EngineDeps,
  disk: DiskRecord,
  point: RestorePointRecord,
): Promise<string> {
  const policy = retryPolicy(deps.config, deps.log);
  const blob = deps.clients.pageBlob(diskLocations(disk).backup, point.backupSnapshot);
  const size = await pointSize(blob, point, policy);
  const writer = digestWriter(deps, disk, point, policy);
  await scanPoint(deps, blob, size, policy, undefined, writer.stage);
  await writer.commit(size);
  await updatePointRow(deps, point, { digestsUrl: writer.url });
  return writer.url;
}

export interface SealDigests {
  url: string;
  /** "incremental": only the windows the backup blob's diff names were read; "full": the whole point. */
  mode: "incremental" | "full";
  /** Windows with data read from the point to make the digests. */
  windowsRead: number;
}

/**
 * Records the digests of a point just sealed (the after-seal hook calls it), so the point stays
 * verifiable after its source snapshot is deleted by the next backup. Where the backup endpoint
 * answers page-range diffs correctly and the previous point's digests cover the same extents,
 * only the windows named by the diff between the two backup snapshots are read: every other
 * window holds the same bytes as in the previous point, so its digest is carried over. Otherwise
 * (first point, size or segment change, a refused diff, Azurite, DISKDELTA_DIFF_MODE=compare)
 * the whole point is read. These digests say what the point held when it was sealed; `verify`
 * while the source snapshot exists proves that equal to the disk and records them anew.
 */
export async function recordSealDigests(
  deps: EngineDeps,
  disk: DiskRecord,
  point: RestorePointRecord,
): Promise<SealDigests> {
  const policy = retryPolicy(deps.config, deps.log);
  const points = await deps.lineage.listPoints(disk.id);
  const at = points.findIndex((p) => p.id === point.id);
  const previous = at >= 0 ? points[at + 1] : undefined;
  if (previous?.digestsUrl && previous.size === point.size && deps.config.diffMode !== "compare") {
    const done = await recordIncrementally(deps, disk, point, previous, policy);
    if (done) return done;
  }
  const blob = deps.clients.pageBlob(diskLocations(disk).backup, point.backupSnapshot);
  const size = await pointSize(blob, point, policy);
  const writer = digestWriter(deps, disk, point, policy);
  const scan = await scanPoint(deps, blob, size, policy, undefined, writer.stage);
  await writer.commit(size);
  await updatePointRow(deps, point, { digestsUrl: writer.url });
  return { url: writer.url, mode: "full", windowsRead: scan.windowsChecked };
}

/** The incremental case of recordSealDigests, or undefined when it does not apply (nothing committed then). */
async function recordIncrementally(
  deps: EngineDeps,
  disk: DiskRecord,
  point: RestorePointRecord,
  previous: RestorePointRecord,
  policy: RetryPolicy,
): Promise<SealDigests | undefined> {
  const backup = diskLocations(disk).backup;
  const pointBlob = deps.clients.pageBlob(backup, point.backupSnapshot);
  const prevLoc = digestsLocation(disk, previous.id);
  const prevDigests = digestsBlob(deps, prevLoc);
  let props;
  try {
    props = await withRetry(policy, () => prevDigests.getProperties());
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  const meta = props.metadata ?? {};
  if (
    meta[DIGEST_METADATA.snapshot] !== previous.backupSnapshot ||
    meta[DIGEST_METADATA.size] !== String(point.size)
  )
    return undefined;
  const extents = digestExtents(point.size, deps.config.segmentBytes);
  const blocks = (await withRetry(policy, () => prevDigests.getBlockList("committed"))).committedBlocks ?? [];
  if (blocks.length !== extents.length) return undefined;
  const writer = digestWriter(deps, disk, point, policy);
  let windowsRead = 0;
  let offset = 0;
  for (const [n, block] of blocks.entries()) {
    const raw = await withRetry(policy, () => prevDigests.downloadToBuffer(offset, block.size));
    offset += block.size;
    const { extent, windows } = decodeExtent(raw, `${prevLoc.url} block ${block.name}`);
    if (extent.start !== extents[n].start || extent.end !== extents[n].end) return undefined;
    let changes;
    try {
      changes = await serviceDiffSegment(pointBlob, previous.backupSnapshot, extent, policy);
    } catch (err) {
      if (isDiffRefusal(err)) return undefined;
      throw err;
    }
    if (answersDiffsWrongly(changes.server)) return undefined;
    const changed = new Set<number>();
    for (const r of [...changes.writes, ...changes.clears]) {
      for (let w = Math.floor(r.start / WINDOW_SIZE); w * WINDOW_SIZE < r.end; w++) changed.add(w);
    }
    const kept = windows.filter((w) => !changed.has(w.index));
    const valid = await validRangesSegment(pointBlob, extent, policy);
    const fresh: WindowDigest[] = [];
    const touched = [...chunksOf(valid)].filter((c) => changed.has(c.index));
    await forEachBounded(touched, deps.config.copyConcurrency, async (chunk) => {
      const parts: Buffer[] = [];
      for (const range of chunk.ranges) parts.push(await downloadRange(pointBlob, range, policy));
      windowsRead += 1;
      fresh.push({ index: chunk.index, md5: md5Of(parts), ranges: chunk.ranges });
    });
    await writer.stage(
      n,
      extent,
      [...kept, ...fresh].sort((a, b) => a.index - b.index),
    );
  }
  await writer.commit(point.size);
  await updatePointRow(deps, point, { digestsUrl: writer.url });
  return { url: writer.url, mode: "incremental", windowsRead };
}

async function updatePointRow(
  deps: EngineDeps,
  point: RestorePointRecord,
  changes: Partial<RestorePointRecord>,
): Promise<void> {
  await retryOnConflict(ROW_UPDATE_ATTEMPTS, async () => {
    const current = await deps.lineage.getPoint(point.diskId, point.id);
    // Retention deleted it meanwhile: there is nothing left to record on.
    if (current) await deps.lineage.updatePoint({ ...current, ...changes });
  });
}

export interface VerifyOptions {
  /** A restore point id, `latest` or an ISO time (see selectPoint); default `latest`. */
  point?: string;
}

export async function verifyPoint(
  deps: EngineDeps,
  diskId: string,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const now = deps.now ?? (() => new Date());
  const policy = retryPolicy(deps.config, deps.log);
  const disk = await requireDisk(deps, diskId);
  const selected = await selectPoint(deps.lineage, diskId, options.point ?? "latest");
  // Held while it is read, so retention does not delete it under a long verify.
  const hold = await holdPoint(deps, selected, `verify of ${selected.id}`);
  try {
    // Re-read: the hold changed the row, and the rest records on the row as it is now.
    const point = (await deps.lineage.getPoint(diskId, selected.id)) ?? selected;
    return await verifyHeld(deps, disk, point, now, policy);
  } finally {
    await hold.release();
  }
}

async function verifyHeld(
  deps: EngineDeps,
  disk: DiskRecord,
  point: RestorePointRecord,
  now: () => Date,
  policy: RetryPolicy,
): Promise<VerifyResult> {
  const diskId = disk.id;
  const { source, backup } = diskLocations(disk);
  const pointBlob = deps.clients.pageBlob(backup, point.backupSnapshot);
  const size = await pointSize(pointBlob, point, policy);
  const sourceBlob = point.sourceSnapshot ? deps.clients.pageBlob(source, point.sourceSnapshot) : undefined;
  const sourceSize = sourceBlob ? await snapshotSize(sourceBlob, policy) : undefined;

  const base = {
    diskId,
    pointId: point.id,
    backupSnapshot: point.backupSnapshot,
    sourceSnapshot: point.sourceSnapshot,
  };
  let result: VerifyResult;
  if (sourceBlob && sourceSize !== undefined) {
    deps.log.info(`verifying ${point.id} against source snapshot ${point.sourceSnapshot}`);
    let scan: Scan;
    let digestsUrl: string | undefined;
    if (sourceSize !== size) {
      const at = Math.min(sourceSize, size);
      scan = {
        bytesChecked: 0,
        windowsChecked: 0,
        difference: {
          start: at,
          end: Math.max(sourceSize, size),
          range: { start: at, end: Math.max(sourceSize, size) },
          kind: "size",
          detail: `the source snapshot is ${sourceSize} bytes, the restore point ${size}`,
        },
      };
    } else {
      const writer = digestWriter(deps, disk, point, policy);
      scan = await scanPoint(deps, pointBlob, size, policy, sourceBlob, writer.stage);
      if (!scan.difference) {
        await writer.commit(size);
        digestsUrl = writer.url;
      }
    }
    result = finish(base, "source-snapshot", scan, now(), digestsUrl);
  } else {
    if (!point.digestsUrl) {
      throw new UnverifiableError(
        `restore point ${point.id} cannot be verified: its source snapshot ${point.sourceSnapshot || "(none)"} is gone ` +
          `and no digests were recorded for it (digests are recorded when a point passes 'diskdelta verify' ` +
          `while it is the newest, before the next backup deletes its source snapshot)`,
      );
    }
    deps.log.info(`verifying ${point.id} against the digests in ${point.digestsUrl}`);
    const scan = await checkDigests(deps, disk, point, pointBlob, size, policy);
    result = finish(base, "digests", scan, now(), point.digestsUrl);
  }
  await updatePointRow(deps, point, {
    verifiedAt: result.verifiedAt,
    verifyResult: result.summary,
    ...(result.digestsUrl ? { digestsUrl: result.digestsUrl } : {}),
  });
  return result;
}

function finish(
  base: Pick<VerifyResult, "diskId" | "pointId" | "backupSnapshot" | "sourceSnapshot">,
  method: VerifyMethod,
  scan: Scan,
  at: Date,
  digestsUrl: string | undefined,
): VerifyResult {
  const against =
    method === "source-snapshot" ? `source snapshot ${base.sourceSnapshot}` : "recorded digests";
  const summary = scan.difference
    ? `failed against ${against}: ${describeDifference(scan.difference)}`
    : `ok: equals ${against} (${scan.windowsChecked} windows, ${scan.bytesChecked} bytes)`;
  return {
    ...base,
    method,
    ok: !scan.difference,
    verifiedAt: at.toISOString(),
    bytesChecked: scan.bytesChecked,
    windowsChecked: scan.windowsChecked,
    firstDifference: scan.difference,
    digestsUrl,
    summary,
  };
}

/** Checks the backup snapshot against recorded digests, one block (extent) at a time. */
async function checkDigests(
  deps: EngineDeps,
  disk: DiskRecord,
  point: RestorePointRecord,
  pointBlob: PageBlobClient,
  size: number,
  policy: RetryPolicy,
): Promise<Scan> {
  const loc = digestsLocation(disk, point.id);
  const blob = digestsBlob(deps, loc);
  let props;
  try {
    props = await withRetry(policy, () => blob.getProperties());
  } catch (err) {
    if (isNotFound(err))
      throw new UnverifiableError(`restore point ${point.id}: its digests ${loc.url} are gone`);
    throw err;
  }
  const meta = props.metadata ?? {};
  if (
    meta[DIGEST_METADATA.snapshot] !== point.backupSnapshot ||
    meta[DIGEST_METADATA.size] !== String(size)
  ) {
    return {
      bytesChecked: 0,
      windowsChecked: 0,
      difference: {
        start: 0,
        end: size,
        range: { start: 0, end: size },
        kind: "digest",
        detail: `the digests were recorded for backup snapshot ${meta[DIGEST_METADATA.snapshot]} of ${meta[DIGEST_METADATA.size]} bytes, the point names ${point.backupSnapshot} of ${size} bytes`,
      },
    };
  }
  const blocks = (await withRetry(policy, () => blob.getBlockList("committed"))).committedBlocks ?? [];
  const scan: Scan = { bytesChecked: 0, windowsChecked: 0 };
  let offset = 0;
  let covered = 0;
  for (const block of blocks) {
    const raw = await withRetry(policy, () => blob.downloadToBuffer(offset, block.size));
    offset += block.size;
    const { extent, windows } = decodeExtent(raw, `${loc.url} block ${block.name}`);
    if (extent.start !== covered) throw new Error(`${loc.url}: extents are not contiguous at ${covered}`);
    covered = extent.end;
    const recorded = normalize(windows.flatMap((w) => w.ranges));
    const actual = await validRangesSegment(pointBlob, extent, policy);
    let difference = firstMapDifference(recorded, actual, "the recorded digests");
    const expected = new Map(windows.map((w) => [w.index, w.md5]));
    await forEachBounded(chunksOf(actual), deps.config.copyConcurrency, async (chunk) => {
      const parts: Buffer[] = [];
      for (const range of chunk.ranges) {
        const data = await downloadRange(pointBlob, range, policy);
        scan.bytesChecked += data.length;
        parts.push(data);
      }
      scan.windowsChecked += 1;
      const md5 = md5Of(parts);
      if (!expected.get(chunk.index)?.equals(md5)) {
        const start = Math.max(chunk.index * WINDOW_SIZE, extent.start);
        const end = Math.min((chunk.index + 1) * WINDOW_SIZE, extent.end);
        difference = earliest(difference, {
          start,
          end,
          range: { start, end },
          kind: "digest",
          detail: "the window's MD5 differs from the recorded digest",
        });
      }
    });
    if (difference) {
      scan.difference = difference;
      return scan;
    }
  }
  if (covered !== size) throw new Error(`${loc.url} covers ${covered} of ${size} bytes`);
  return scan;
}
