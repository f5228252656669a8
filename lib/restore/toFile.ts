/**
 * Restore to a file: a restore point written as a sparse local image of the disk's size. Only
 * valid ranges are downloaded, a page of zeros stays a hole, and every window is checked against
 * the point's digests before it is written (integrity.ts). Progress is kept in
 * `<path>.diskdelta-partial` (write-then-rename, the offset below which the image is written and
 * checked), so running the same command again after an interruption resumes instead of starting
 * over. Guarantees: the sidecar is removed only when the whole image is written, checked and
 * synced; a file whose sidecar is present is never a finished image; a damaged point stops the
 * restore with the window named and leaves the sidecar, so the file never looks done.
 */
import fs from "node:fs";
import path from "node:path";
import { InputError } from "../core/errors";
import { messageOf } from "../core/errors";
import type { Deps } from "../deps";
import { requireDisk } from "../disks/register";
import { backupLocation } from "../lineage/locations";
import { WINDOW_SIZE } from "../ranges";
import { holdPoint } from "./hold";
import { checkNotDamaged, readVerified } from "./integrity";
import { selectPoint } from "./points";

export interface RestoreToFileOptions {
  point?: string;
  path: string;
  overwrite?: boolean;
  /** Read a point recorded as damaged anyway. */
  allowDamaged?: boolean;
  /** Aborting stops at the next window; the partial file and its sidecar stay for a resume. */
  signal?: AbortSignal;
  /** Called as windows are written, with the offset below which the image is complete. */
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
  checkedBy: "digests" | "range-md5";
}

interface Partial {
  diskId: string;
  pointId: string;
  size: number;
  offset: number;
}

export const PARTIAL_SUFFIX = ".diskdelta-partial";
/** How often the sidecar is rewritten: a resume repeats at most this much work. */
const SIDECAR_EVERY_BYTES = 64 * 1024 * 1024;

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

const ZEROS = Buffer.alloc(64 * 1024);
function allZero(b: Buffer): boolean {
  // Compare 64 KiB at a time against a shared zero block: one native call per block.
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - at);
    if (!b.subarray(at, at + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}

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
  deps: Deps,
  diskId: string,
  options: RestoreToFileOptions,
): Promise<RestoreToFileResult> {
  if (!options.path || options.path === "-") {
    throw InputError.field(
      "toFile",
      "needs a file path: '-' (stdout) is not possible, the image is written at random offsets",
    );
  }
  const disk = await requireDisk(deps, diskId);
  const point = await selectPoint(deps.lineage, diskId, options.point ?? "latest");
  checkNotDamaged(point, options.allowDamaged);
  const file = path.resolve(options.path);
  const sidecar = `${file}${PARTIAL_SUFFIX}`;
  const dir = path.dirname(file);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    if (!fs.statSync(dir).isDirectory()) throw new Error("not a directory");
  } catch (err) {
    throw InputError.field(
      "toFile",
      `cannot write ${file}: ${dir} is not a writable directory (${messageOf(err)})`,
    );
  }
  let fileExists = false;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw InputError.field("toFile", `${file} exists and is not a regular file`);
    fileExists = true;
  } catch (err) {
    if (err instanceof InputError) throw err;
  }
  const partial = readPartial(sidecar);
  const resumable =
    fileExists && partial?.diskId === diskId && partial.pointId === point.id && partial.size === point.size;
  if (!resumable && !options.overwrite) {
    if (partial && fileExists) {
      throw InputError.field(
        "toFile",
        `${file} is a partial restore of disk ${partial.diskId} point ${partial.pointId}; rerun with {{point}} ${partial.pointId} to resume it, or pass {{overwrite}} to start over`,
      );
    }
    if (fileExists)
      throw InputError.field("toFile", `${file} already exists; choose another path or pass {{overwrite}}`);
  }

  // Held while the snapshot is read, so retention spares it; renewed for long restores.
  const hold = await holdPoint(deps, point, `restore of ${point.id} to ${file}`);
  try {
    const backup = backupLocation(disk);
    const props = await deps.storage.properties({
      kind: "blob",
      location: backup,
      snapshot: point.backupSnapshot,
    });
    if (!props)
      throw new InputError([
        {
          field: "point",
          message: `restore point ${point.id}: its backup snapshot ${point.backupSnapshot} is gone`,
        },
      ]);
    const size = props.size;
    // Resume at a window boundary: the windows below it were written and checked whole.
    const resumedFrom = resumable
      ? Math.min(Math.floor(partial.offset / WINDOW_SIZE) * WINDOW_SIZE, size)
      : 0;
    const progress: Partial = { diskId, pointId: point.id, size, offset: resumedFrom };
    // The sidecar goes first: a crash right after creating the file still leaves it resumable.
    writePartial(sidecar, progress);
    const fd = fs.openSync(file, resumable ? "r+" : "w", 0o600);
    let bytesDownloaded = 0;
    let bytesWritten = 0;
    let sinceSidecar = 0;
    let checkedBy: RestoreToFileResult["checkedBy"];
    try {
      // Extends with a hole: no blocks are allocated for the pages never written.
      fs.ftruncateSync(fd, size);
      if (resumedFrom > 0) deps.log.info(`resuming the restore to ${file} at byte ${resumedFrom} of ${size}`);
      const read = await readVerified(deps, backup, point, size, resumedFrom, async (chunk, parts) => {
        if (options.signal?.aborted) {
          throw new Error(
            `restore to ${file} interrupted at byte ${progress.offset}; run the same command to resume`,
          );
        }
        for (const [i, range] of chunk.ranges.entries()) {
          const data = parts[i];
          bytesDownloaded += data.length;
          if (allZero(data)) continue; // a zero page reads back as a hole: leave it one
          await writeAt(fd, data, range.start);
          bytesWritten += data.length;
        }
        sinceSidecar += chunk.bytes;
        progress.offset = Math.min(size, (chunk.index + 1) * WINDOW_SIZE);
        if (sinceSidecar >= SIDECAR_EVERY_BYTES) {
          fs.fsyncSync(fd);
          writePartial(sidecar, progress);
          sinceSidecar = 0;
        }
        options.onProgress?.(progress.offset, size, bytesDownloaded);
      });
      checkedBy = read.checkedBy;
      fs.fsyncSync(fd);
    } catch (err) {
      // Interrupted or failed: what is written and checked so far is kept for the resume.
      try {
        fs.fsyncSync(fd);
        writePartial(sidecar, progress);
      } catch {
        // the sidecar keeps its previous offset, which is only ever lower
      }
      throw err;
    } finally {
      fs.closeSync(fd);
    }
    // Only now, with every window written, checked and synced, does the image stop being partial.
    fs.rmSync(sidecar, { force: true });
    options.onProgress?.(size, size, bytesDownloaded);
    return {
      path: file,
      diskId,
      pointId: point.id,
      size,
      bytesDownloaded,
      bytesWritten,
      resumedFrom,
      checkedBy,
    };
  } finally {
    await hold.release();
  }
}
