/**
 * Reading a restore point the way a restore must: window by window in disk order (listing ahead,
 * `concurrency` windows read at once), every window checked against the point's digests before
 * anything is done with it — its valid ranges and the MD5 of its bytes — and, at the end, no window
 * the digests name left unread. Where a point has no digests, the service's range MD5 of every
 * read (checked by the storage port) is the check. A mismatch stops the read with an
 * IntegrityError naming the window, and the point is recorded as failed, so it is not restored
 * again without the user asking for a damaged point by name.
 */
import { forEachOrdered } from "../core/concurrency";
import { IntegrityError, messageOf } from "../core/errors";
import type { Deps } from "../deps";
import { validChunks } from "../diff/lister";
import { DigestFormatError, digestsLocation } from "../digests/format";
import {
  checkWindow,
  missingWindow,
  openDigests,
  type DigestCursor,
  type DigestMismatch,
} from "../digests/store";
import type { RestorePointRecord } from "../lineage/types";
import { WINDOW_SIZE, type Chunk } from "../ranges";
import type { PageAddress } from "../storage/port";
import type { BlobLocation } from "../storage/urls";
import { listerOptions, updatePointRow } from "./verify";

export interface VerifiedRead {
  /** How the bytes were checked. */
  checkedBy: "digests" | "range-md5";
  windows: number;
  bytes: number;
}

/**
 * Reads `point` (a snapshot of `backup`) from byte `from` (window-aligned) to its end and hands
 * each checked window to `use`, in disk order. Throws IntegrityError on the first mismatch, after
 * recording the point as failed.
 */
export async function readVerified(
  deps: Deps,
  backup: BlobLocation,
  point: RestorePointRecord,
  size: number,
  from: number,
  use: (chunk: Chunk, parts: Buffer[]) => Promise<void>,
): Promise<VerifiedRead> {
  const address: PageAddress = { kind: "blob", location: backup, snapshot: point.backupSnapshot };
  let cursor: DigestCursor | undefined;
  if (point.digestsUrl) {
    const opened = await openDigests(
      deps.storage,
      digestsLocation(backup, point.id),
      point.backupSnapshot,
      size,
    );
    if (!opened.ok) await fail(deps, point, { start: 0, end: size, kind: "digest", detail: opened.why });
    else cursor = opened.cursor;
  }
  const read: VerifiedRead = { checkedBy: cursor ? "digests" : "range-md5", windows: 0, bytes: 0 };
  const planned = (async function* () {
    for await (const chunk of validChunks(deps.storage, address, from, size, listerOptions(deps))) {
      if (!cursor) {
        yield { chunk };
        continue;
      }
      const claim = await readDigests(deps, point, chunk.index, size, () => cursor!.claim(chunk.index));
      const missing = claim.skipped.find((w) => w.index * 4 * 1024 * 1024 >= from);
      yield { chunk, digest: claim.digest, missing };
    }
  })();
  await forEachOrdered(
    planned,
    deps.config.copyConcurrency,
    async ({ chunk, digest, missing }): Promise<{ parts: Buffer[]; mismatch?: DigestMismatch }> => {
      if (missing) return { parts: [], mismatch: missingWindow(missing) };
      const parts: Buffer[] = [];
      for (const range of chunk.ranges) parts.push(await deps.storage.read(address, range));
      return { parts, mismatch: cursor ? checkWindow(chunk, digest, parts, size) : undefined };
    },
    async ({ parts, mismatch }, { chunk }) => {
      if (mismatch) await fail(deps, point, mismatch);
      await use(chunk, parts);
      read.windows++;
      read.bytes += chunk.bytes;
    },
  );
  if (cursor) {
    const rest = await readDigests(deps, point, undefined, size, () => cursor!.rest());
    if (rest.skipped.length > 0) await fail(deps, point, missingWindow(rest.skipped[0]));
  }
  return read;
}

/**
 * The next digests a reader needs. A digests blob that does not decode (a block damaged at rest,
 * extents that do not follow) means the point cannot be checked: a failed point naming where, not
 * a crash. Any other failure (the storage's) is rethrown as it is.
 */
async function readDigests<T>(
  deps: Deps,
  point: RestorePointRecord,
  index: number | undefined,
  size: number,
  read: () => Promise<T>,
): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (!(err instanceof DigestFormatError)) throw err;
    const span =
      index === undefined
        ? { start: 0, end: size }
        : { start: index * WINDOW_SIZE, end: Math.min(size, (index + 1) * WINDOW_SIZE) };
    return fail(deps, point, {
      ...span,
      kind: "digest",
      detail: `its recorded digests are damaged (${messageOf(err)})`,
    });
  }
}

async function fail(deps: Deps, point: RestorePointRecord, m: DigestMismatch): Promise<never> {
  const summary = `failed against recorded digests: window [${m.start}, ${m.end}): ${m.detail}`;
  await updatePointRow(deps, point, {
    integrity: "failed",
    verifiedAt: deps.now().toISOString(),
    verifyResult: summary,
  }).catch((err: unknown) =>
    deps.log.warn(`could not record restore point ${point.id} as failed: ${(err as Error).message}`),
  );
  throw new IntegrityError(
    `restore point ${point.id} of disk ${point.diskId} is damaged: bytes [${m.start}, ${m.end}): ${m.detail}`,
    { start: m.start, end: m.end },
  );
}

/** Refuses a point recorded as failed unless the caller asked for a damaged point on purpose. */
export function checkNotDamaged(point: RestorePointRecord, allowDamaged: boolean | undefined): void {
  if (point.integrity === "failed" && !allowDamaged) {
    throw new IntegrityError(
      `restore point ${point.id} of disk ${point.diskId} is recorded as damaged (${point.verifyResult ?? "failed a check"}); restore another point, or pass {{allowDamaged}} to read it anyway`,
    );
  }
}
