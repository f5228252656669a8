/**
 * Verify: proves that a restore point holds what it claims. While the point's source snapshot
 * exists (it does for the base point; the engine deletes older ones), the point's backup snapshot
 * is compared with it: the valid-range maps must be equal and the bytes of every window equal. A
 * point that passes gets its per-window digests recorded afresh (lib/digests), so it stays
 * verifiable after its source snapshot is gone; then the backup snapshot is checked against them.
 * Guarantees:
 *
 * - a pass means: same size, same valid ranges, same bytes (against the source), or same valid
 *   ranges and the same MD5 per window as recorded (digests);
 * - a failure names the first differing range in disk order, narrowed to its first 512-byte page
 *   against the source, to its 4 MiB window against digests (nothing finer is stored);
 * - the result, time and integrity are recorded on the point row (`verifiedAt`, `verifyResult`,
 *   `integrity`); digests are recorded only for a point that passed against its source;
 * - listing runs ahead and windows are read `concurrency` at a time, in disk order of results,
 *   so memory is bounded by concurrency × 2 × 4 MiB plus the listings in flight.
 */
import { forEachOrdered } from "../core/concurrency";
import { InputError } from "../core/errors";
import type { Deps } from "../deps";
import { listChanges, listerOptionsOf, validChunks, windowChunks, type ListerOptions } from "../diff/lister";
import { digestsLocation, md5Of, type WindowDigest } from "../digests/format";
import {
  checkWindow,
  DigestWriter,
  missingWindow,
  openDigests,
  type DigestCursor,
  type DigestMismatch,
} from "../digests/store";
import { requireDisk } from "../disks/register";
import { backupLocation } from "../lineage/locations";
import { patchPoint } from "../lineage/rows";
import type { DiskRecord, RestorePointRecord } from "../lineage/types";
import { differingPages, PAGE_SIZE, type Chunk, type PageRange } from "../ranges";
import type { PageAddress } from "../storage/port";
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

/** A verification that could not be made at all (no source snapshot and no digests, a gone snapshot). */
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

export function listerOptions(deps: Deps): ListerOptions {
  return listerOptionsOf(deps.config);
}

function describeDifference(d: Difference): string {
  const page = `[${d.start}, ${d.end})`;
  const range =
    d.range.start === d.start && d.range.end === d.end ? "" : ` (in [${d.range.start}, ${d.range.end}))`;
  return `${d.kind === "digest" ? "window" : "page"} ${page}${range}: ${d.detail}`;
}

function fromMismatch(m: DigestMismatch): Difference {
  return {
    start: m.start,
    end: m.end,
    range: { start: m.start, end: m.end },
    kind: m.kind,
    detail: m.detail,
  };
}

export function updatePointRow(
  deps: Deps,
  point: RestorePointRecord,
  changes: Partial<RestorePointRecord>,
): Promise<void> {
  return patchPoint(deps.lineage, point, changes);
}

interface Scan {
  bytesChecked: number;
  windowsChecked: number;
  difference?: Difference;
}

/** Stops a scan at its first difference (in disk order): thrown by the in-order delivery. */
class Found extends Error {
  constructor(readonly difference: Difference) {
    super("difference found");
  }
}

type CompareItem = { kind: "window"; chunk: Chunk } | { kind: "map"; difference: Difference };

/**
 * The windows valid on both sides of a compare listing, in disk order, up to the first place where
 * the valid-range maps differ (then that difference, and nothing after it).
 */
async function* compareItems(
  deps: Deps,
  source: PageAddress,
  point: PageAddress,
  size: number,
): AsyncGenerator<CompareItem> {
  let difference: Difference | undefined;
  const both = (async function* () {
    for await (const piece of listChanges(
      deps.storage,
      { kind: "compare", first: source, second: point },
      0,
      size,
      listerOptions(deps),
    )) {
      const firstOnly = piece.writes[0];
      const pointOnly = piece.clears[0];
      const first = [firstOnly, pointOnly].filter(Boolean).sort((a, b) => a!.start - b!.start)[0];
      if (first) {
        const inSource = first === firstOnly;
        difference = {
          start: first.start,
          end: first.start + PAGE_SIZE,
          range: first,
          kind: "valid-ranges",
          detail: inSource
            ? "valid in the source snapshot but empty in the restore point"
            : "valid in the restore point but empty in the source snapshot",
        };
        yield piece.both
          .filter((r) => r.start < first.start)
          .map((r) => ({ start: r.start, end: Math.min(r.end, first.start) }));
        return;
      }
      yield piece.both;
    }
  })();
  for await (const chunk of windowChunks(both)) yield { kind: "window", chunk };
  if (difference) yield { kind: "map", difference };
}

/** Compares the point with its source snapshot; on a pass its digests are staged into `writer`. */
async function scanAgainstSource(
  deps: Deps,
  point: PageAddress,
  source: PageAddress,
  size: number,
  writer: DigestWriter,
): Promise<Scan> {
  const scan: Scan = { bytesChecked: 0, windowsChecked: 0 };
  try {
    await forEachOrdered(
      compareItems(deps, source, point, size),
      deps.config.copyConcurrency,
      async (item): Promise<{ digest?: WindowDigest; difference?: Difference }> => {
        if (item.kind === "map") return { difference: item.difference };
        const parts: Buffer[] = [];
        let difference: Difference | undefined;
        for (const range of item.chunk.ranges) {
          const [mine, theirs] = await Promise.all([
            deps.storage.read(point, range),
            deps.storage.read(source, range),
          ]);
          scan.bytesChecked += mine.length;
          if (!difference && !mine.equals(theirs)) {
            const first = differingPages(theirs, mine, range.start)[0] ?? range;
            difference = {
              start: first.start,
              end: first.start + PAGE_SIZE,
              range: first,
              kind: "bytes",
              detail: "bytes differ from the source snapshot",
            };
          }
          parts.push(mine);
        }
        scan.windowsChecked++;
        return {
          difference,
          digest: { index: item.chunk.index, md5: md5Of(parts), ranges: item.chunk.ranges },
        };
      },
      async (result) => {
        if (result.difference) throw new Found(result.difference);
        await writer.add(result.digest!);
      },
    );
  } catch (err) {
    if (err instanceof Found) return { ...scan, difference: err.difference };
    throw err;
  }
  return scan;
}

/** Checks the point against its recorded digests, window by window in disk order. */
export async function scanAgainstDigests(
  deps: Deps,
  point: PageAddress,
  size: number,
  cursor: DigestCursor,
): Promise<Scan> {
  const scan: Scan = { bytesChecked: 0, windowsChecked: 0 };
  const planned = (async function* () {
    for await (const chunk of validChunks(deps.storage, point, 0, size, listerOptions(deps))) {
      const claim = await cursor.claim(chunk.index);
      if (claim.skipped.length > 0) {
        yield { chunk, missing: claim.skipped[0] };
        return;
      }
      yield { chunk, digest: claim.digest };
    }
  })();
  try {
    await forEachOrdered(
      planned,
      deps.config.copyConcurrency,
      async ({ chunk, digest, missing }): Promise<DigestMismatch | undefined> => {
        if (missing) return missingWindow(missing);
        const parts: Buffer[] = [];
        for (const range of chunk.ranges) parts.push(await deps.storage.read(point, range));
        scan.bytesChecked += chunk.bytes;
        scan.windowsChecked++;
        return checkWindow(chunk, digest, parts, size);
      },
      (mismatch) => {
        if (mismatch) throw new Found(fromMismatch(mismatch));
      },
    );
  } catch (err) {
    if (err instanceof Found) return { ...scan, difference: err.difference };
    throw err;
  }
  const rest = await cursor.rest();
  if (rest.skipped.length > 0) return { ...scan, difference: fromMismatch(missingWindow(rest.skipped[0])) };
  if (!rest.complete) throw new Error(`the digests do not cover the whole disk of ${size} bytes`);
  return scan;
}

export interface VerifyOptions {
  /** A restore point id, `latest` or an ISO time (see selectPoint); default `latest`. */
  point?: string;
}

export async function verifyPoint(
  deps: Deps,
  diskId: string,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const disk = await requireDisk(deps, diskId);
  const selected = await selectPoint(deps.lineage, diskId, options.point ?? "latest");
  // Held while it is read, so retention does not delete it under a long verify.
  const hold = await holdPoint(deps, selected, `verify of ${selected.id}`);
  try {
    // Re-read: the hold changed the row, and the rest records on the row as it is now.
    const point = (await deps.lineage.getPoint(diskId, selected.id)) ?? selected;
    return await verifyHeld(deps, disk, point);
  } finally {
    await hold.release();
  }
}

async function verifyHeld(deps: Deps, disk: DiskRecord, point: RestorePointRecord): Promise<VerifyResult> {
  const backup = backupLocation(disk);
  const pointAddress: PageAddress = { kind: "blob", location: backup, snapshot: point.backupSnapshot };
  const props = await deps.storage.properties(pointAddress);
  if (!props)
    throw new UnverifiableError(
      `restore point ${point.id}: its backup snapshot ${point.backupSnapshot} is gone; nothing to verify`,
    );
  const size = props.size;
  const base = {
    diskId: disk.id,
    pointId: point.id,
    backupSnapshot: point.backupSnapshot,
    sourceSnapshot: point.sourceSnapshot,
  };
  let result: VerifyResult;
  const source = await openSourceSnapshot(deps, disk, point);
  if (source) {
    try {
      deps.log.info(`verifying ${point.id} against source snapshot ${point.sourceSnapshot}`);
      const sourceSize = (await deps.storage.properties(source.address))?.size;
      let scan: Scan;
      let digestsUrl: string | undefined;
      if (sourceSize !== size) {
        const at = Math.min(sourceSize ?? 0, size);
        const end = Math.max(sourceSize ?? 0, size);
        scan = {
          bytesChecked: 0,
          windowsChecked: 0,
          difference: {
            start: at,
            end,
            range: { start: at, end },
            kind: "size",
            detail: `the source snapshot is ${sourceSize} bytes, the restore point ${size}`,
          },
        };
      } else {
        const writer = new DigestWriter(deps.storage, digestsLocation(backup, point.id), {
          diskId: disk.id,
          pointId: point.id,
          backupSnapshot: point.backupSnapshot,
        });
        scan = await scanAgainstSource(deps, pointAddress, source.address, size, writer);
        if (!scan.difference) {
          await writer.finish(size);
          digestsUrl = writer.location.url;
        }
      }
      result = finish(base, "source-snapshot", scan, deps.now(), digestsUrl);
    } finally {
      await source.close();
    }
  } else {
    if (!point.digestsUrl) {
      throw new UnverifiableError(
        `restore point ${point.id} cannot be verified: its source snapshot ${point.sourceSnapshot || "(none)"} is gone ` +
          `and no digests were recorded for it (digests are recorded when a point is sealed, and when it passes a verify while it is the newest)`,
      );
    }
    deps.log.info(`verifying ${point.id} against the digests in ${point.digestsUrl}`);
    const opened = await openDigests(
      deps.storage,
      digestsLocation(backup, point.id),
      point.backupSnapshot,
      size,
    );
    if (!opened.ok) {
      if (opened.gone) throw new UnverifiableError(`restore point ${point.id}: ${opened.why}`);
      const scan: Scan = {
        bytesChecked: 0,
        windowsChecked: 0,
        difference: {
          start: 0,
          end: size,
          range: { start: 0, end: size },
          kind: "digest",
          detail: opened.why,
        },
      };
      result = finish(base, "digests", scan, deps.now(), point.digestsUrl);
    } else {
      result = finish(
        base,
        "digests",
        await scanAgainstDigests(deps, pointAddress, size, opened.cursor),
        deps.now(),
        point.digestsUrl,
      );
    }
  }
  await updatePointRow(deps, point, {
    verifiedAt: result.verifiedAt,
    verifyResult: result.summary,
    integrity: result.ok ? "ok" : "failed",
    ...(result.digestsUrl ? { digestsUrl: result.digestsUrl } : {}),
  });
  return result;
}

/** The point's source snapshot opened for reading, or undefined when it is gone. */
async function openSourceSnapshot(deps: Deps, disk: DiskRecord, point: RestorePointRecord) {
  if (!point.sourceSnapshot) return undefined;
  const source = deps.sources.of(disk);
  // A point restored from another disk names a source snapshot of the restored disk's own blob.
  try {
    const opened = await source.open(point.sourceSnapshot);
    if (await deps.storage.properties(opened.address)) return opened;
    await opened.close();
    return undefined;
  } catch (err) {
    if (err instanceof InputError) return undefined;
    if ((err as { statusCode?: number }).statusCode === 404) return undefined;
    throw err;
  }
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
