/**
 * Restore to a local file: the restore point's disk image as a sparse file. Guarantees:
 *
 * - the file has the disk's size and its bytes equal the restore point's; only valid ranges are
 *   downloaded and only non-zero pages are written, so the holes of the disk stay holes;
 * - memory is bounded by concurrency × 4 MiB (one download per in-flight chunk), never by the
 *   disk size or its number of ranges;
 * - progress survives a crash: `<path>.diskdelta-partial` records the point, the size and the
 *   offset below which every byte is on disk (fsynced before the offset is advanced); the same
 *   command run again resumes there; the sidecar is removed when the image is complete;
 * - the restore point is held while it is read (see hold.ts), so retention never deletes it
 *   under a running restore;
 * - an existing file is replaced only with `overwrite` (or when it is this point's own partial
 *   restore); bad input is refused before anything is created.
 */
import fs from "node:fs";
import path from "node:path";
import { errorInfo, isNotFound } from "../azure/errors";
import { withRetry } from "../azure/retry";
import { InputError, requireDisk } from "../backup/disks";
import { diskLocations, retryPolicy, type EngineDeps } from "../backup/run";
import { forEachBounded } from "../concurrency";
import { downloadRange, validRangesSegment } from "../diff";
import { chunksOf, segments } from "../ranges";
import { holdPoint } from "./hold";
import { selectPoint } from "./points";

export interface RestoreToFileOptions {
  point: string;
  path: string;
  overwrite?: boolean;
  /** Aborting stops at the next chunk; the partial file and its sidecar stay for a resume. */
  signal?: AbortSignal;
  /** Called after each segment with the offset below which the image is complete. */
  onProgress?: (done: number, size: number, bytesDownloaded: number) => void;
}

export interface RestoreToFileResult {
  path: string;
  diskId: string;
  pointId: string;
  size: number;
  bytesDownloaded: number;
  bytesWritten: number;
  /** The offset a resumed restore started from (0 for a fresh one). */
  resumedFrom: number;
}

interface Partial {
  diskId: string;
  pointId: string;
  size: number;
  offset: number;
}

export const PARTIAL_SUFFIX = ".diskdelta-partial";

function readPartial(file: string): Partial | undefined {
  try {
    const p = JSON.parse(fs.readFileSync(file, "utf8")) as Partial;
    return typeof p.pointId === "string" && Number.isSafeInteger(p.size) && Number.isSafeInteger(p.offset)
      ? p
      : undefined;
  } catch {
    return undefined;
  }
}

/** Write-then-rename, so a crash leaves either the old or the new progress, never a torn one. */
function writePartial(file: string, p: Partial): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(p));
  fs.renameSync(tmp, file);
}

function allZero(b: Buffer): boolean {
  // Compare 64 KiB at a time against a shared zero block: one native call per block.
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - at);
    if (!b.subarray(at, at + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}
const ZEROS = Buffer.alloc(64 * 1024);

/** Positional write of all of `data` (a write may be short; loop until it is not). */
async function writeAt(fd: number, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length;) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.write(fd, data, done, data.length - done, position + done, (err, written) =>
        err ? reject(err) : resolve(written),
      ),
    );
    done += n;
  }
}

export async function restoreToFile(
  deps: EngineDeps,
  diskId: string,
  options: RestoreToFileOptions,
): Promise<RestoreToFileResult> {
  if (!options.path || options.path === "-") {
    throw new InputError([
      "--to-file needs a file path: '-' (stdout) is not possible, the image is written at random offsets",
    ]);
  }
  const disk = await requireDisk(deps, diskId);
  const point = await selectPoint(deps.lineage, diskId, options.point);
  const file = path.resolve(options.path);
  const sidecar = `${file}${PARTIAL_SUFFIX}`;
  const policy = retryPolicy(deps.config, deps.log);

  const dir = path.dirname(file);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    if (!fs.statSync(dir).isDirectory()) throw new Error("not a directory");
  } catch (err) {
    throw new InputError([
      `cannot write ${file}: ${dir} is not a writable directory (${errorInfo(err).message})`,
    ]);
  }
  let fileExists = false;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new InputError([`${file} exists and is not a regular file`]);
    fileExists = true;
  } catch (err) {
    if (err instanceof InputError) throw err;
  }
  const partial = readPartial(sidecar);
  const resumable =
    fileExists && partial?.diskId === diskId && partial.pointId === point.id && partial.size === point.size;
  if (!resumable && !options.overwrite) {
    if (partial && fileExists) {
      throw new InputError([
        `${file} is a partial restore of disk ${partial.diskId} point ${partial.pointId}; rerun with --point ${partial.pointId} to resume it, or pass --overwrite to start over`,
      ]);
    }
    if (fileExists) throw new InputError([`${file} already exists; choose another path or pass --overwrite`]);
  }

  // Held while the snapshot is read, so retention spares it; renewed for long restores.
  const hold = await holdPoint(deps, point, `restore of ${point.id} to ${file}`);
  try {
    return await readHeld();
  } finally {
    await hold.release();
  }

  async function readHeld(): Promise<RestoreToFileResult> {
    const { backup } = diskLocations(disk);
    const source = deps.clients.pageBlob(backup, point.backupSnapshot);
    let size: number;
    try {
      size = (await withRetry(policy, () => source.getProperties())).contentLength ?? 0;
    } catch (err) {
      if (isNotFound(err))
        throw new InputError([
          `restore point ${point.id}: its backup snapshot ${point.backupSnapshot} is gone`,
        ]);
      throw err;
    }

    const resumedFrom = resumable ? Math.min(partial.offset, size) : 0;
    const progress: Partial = { diskId, pointId: point.id, size, offset: resumedFrom };
    // The sidecar goes first: a crash right after creating the file still leaves it resumable.
    writePartial(sidecar, progress);
    const fd = fs.openSync(file, resumable ? "r+" : "w");
    let bytesDownloaded = 0;
    let bytesWritten = 0;
    const interrupted = () => {
      if (options.signal?.aborted)
        throw new Error(
          `restore to ${file} interrupted at byte ${progress.offset}; run the same command to resume`,
        );
    };
    try {
      // Extends with a hole: no blocks are allocated for the pages never written.
      fs.ftruncateSync(fd, size);
      if (resumedFrom > 0) deps.log.info(`resuming the restore to ${file} at byte ${resumedFrom} of ${size}`);
      for (const segment of segments(size, deps.config.segmentBytes)) {
        if (segment.end <= resumedFrom) continue;
        interrupted();
        const window = { start: Math.max(segment.start, resumedFrom), end: segment.end };
        const valid = await validRangesSegment(source, window, policy);
        await forEachBounded(chunksOf(valid), deps.config.copyConcurrency, async (chunk) => {
          interrupted();
          for (const range of chunk.ranges) {
            const data = await downloadRange(source, range, policy);
            if (data.length !== range.end - range.start) {
              throw new Error(
                `short read of [${range.start}, ${range.end}) from ${source.url}: ${data.length} bytes`,
              );
            }
            bytesDownloaded += data.length;
            if (allZero(data)) continue; // a zero page reads back as a hole: leave it one
            await writeAt(fd, data, range.start);
            bytesWritten += data.length;
          }
        });
        fs.fsyncSync(fd);
        progress.offset = segment.end;
        writePartial(sidecar, progress);
        options.onProgress?.(segment.end, size, bytesDownloaded);
      }
    } finally {
      fs.closeSync(fd);
    }
    fs.rmSync(sidecar, { force: true });
    return { path: file, diskId, pointId: point.id, size, bytesDownloaded, bytesWritten, resumedFrom };
  }
}
