/**
 * Restore as a new disk, the second half of Microsoft's incremental-snapshot walkthrough: the
 * restore point is written, window by window and checked against its digests as it streams
 * (integrity.ts), into two new page blobs at once — a new backup blob beside the point's (the
 * point "promoted") and a new disk blob beside the source — and both are snapshotted; the new disk
 * is registered with its snapshot as its base and the promoted blob as its backup blob, so its
 * next backup is incremental, not a full copy. Guarantees:
 *
 * - a restore never writes over data it did not create: a target that is the source or backup
 *   blob of any registered disk is refused, with or without `overwrite`, naming that disk; an
 *   existing blob is replaced only with `overwrite` and only if diskdelta made it as a restore
 *   target (its metadata says so) and no lease is held on it, and the result says what was
 *   replaced; the leftover of an interrupted restore to the same name is recognised and taken over;
 * - every byte written is checked against the point's digests first; a damaged point stops the
 *   restore (IntegrityError naming the window), is recorded as failed, and leaves nothing behind;
 * - every check runs before anything is written; a failure deletes whatever this restore created
 *   (blobs, snapshots) before it is rethrown; registering the disk is the last step, so a restore
 *   is either registered whole or not at all;
 * - the restore point is held (hold.ts) while it is read, so retention never deletes it under a
 *   running restore; no credential is logged, returned or stored.
 */
import path from "node:path/posix";
import { ConflictError, InputError, type Problem } from "../core/errors";
import { messageOf } from "../core/errors";
import { isRetryable } from "../core/retry";
import type { Deps } from "../deps";
import { checkDiskId, requireDisk } from "../disks/register";
import { newId } from "../lineage/ids";
import { backupLocation, pointIdOf, sourceBlobLocation } from "../lineage/locations";
import { pointTimeIso, type DiskRecord, type RestorePointRecord, type RunRecord } from "../lineage/types";
import { tags } from "../sources/tagged";
import type { BlobAddress } from "../storage/port";
import { blobLocation, type BlobLocation } from "../storage/urls";
import { digestsLocation, md5Of } from "../digests/format";
import { DigestWriter } from "../digests/store";
import { holdPoint } from "./hold";
import { checkNotDamaged, readVerified } from "./integrity";
import { selectPoint } from "./points";

export interface RestoreOptions {
  /** A restore point id, `latest` (the default), or an ISO time (see selectPoint). */
  point?: string;
  /** New disk id, also the name of the new disk blob (plus the source's extension) and of the promoted backup blob. */
  name?: string;
  /** Replace existing restore targets that diskdelta made. */
  overwrite?: boolean;
  /** Read a point recorded as damaged anyway. */
  allowDamaged?: boolean;
  /** The restore's id (rs-…); one is made when absent. */
  restoreId?: string;
  onProgress?: (done: number, size: number, bytes: number) => void;
}

export interface RestoreResult {
  restoreId: string;
  diskId: string;
  /** The new disk blob in the source account (no credential). */
  diskUrl: string;
  /** Its snapshot: the new disk's base. */
  baseSnapshot: string;
  backupBlobUrl: string;
  /** The snapshot of the promoted backup blob, recorded as the new disk's first restore point. */
  backupSnapshot: string;
  restoredPoint: RestorePointRecord;
  fromDiskId: string;
  size: number;
  pointId: string;
  /** Blobs that existed and were replaced (restore targets diskdelta made earlier). */
  replaced: string[];
  checkedBy: "digests" | "range-md5";
}

/** Metadata that marks a blob as a restore target diskdelta made: `<from disk>/<point>` and the new disk's name. */
export const RESTORE_OF_TAG = "diskdeltarestoreof";
export const RESTORE_AS_TAG = "diskdeltarestoreas";
/** The restore's id (rs-…), so the rerun of an interrupted restore goes on as the same restore. */
export const RESTORE_ID_TAG = "diskdeltarestoreid";

/** `<disk>-restored-<point time>` in disk-id form, e.g. web1-restored-20261125t114100z. */
export function defaultRestoreName(diskId: string, point: RestorePointRecord): string {
  const compact = pointTimeIso(point)
    .replace(/\.\d+Z$/, "Z")
    .replace(/[-:]/g, "")
    .toLowerCase();
  return `${diskId}-restored-${compact}`;
}

/** The new disk's blob: beside the original, named after the new id, keeping the original's extension (.vhd). */
function newDiskLocation(source: BlobLocation, name: string): BlobLocation {
  const dir = path.dirname(source.blob);
  const blob = `${name}${path.extname(source.blob)}`;
  return blobLocation(source, source.container, dir === "." ? blob : `${dir}/${blob}`);
}

/** Which registered disk uses `loc` as its source or backup blob, if any. */
function usedBy(disks: DiskRecord[], loc: BlobLocation): { disk: DiskRecord; as: string } | undefined {
  for (const d of disks) {
    if (d.sourceUrl === loc.url) return { disk: d, as: "source" };
    try {
      if (backupLocation(d).url === loc.url) return { disk: d, as: "backup blob" };
    } catch {
      // a row edited by hand: it names no blob we could write
    }
  }
  return undefined;
}

export interface Target {
  what: string;
  location: BlobLocation;
  /** It exists and will be replaced (a restore target diskdelta made). */
  replace: boolean;
  /** It is the leftover of an interrupted restore to the same name: that restore's id. */
  leftoverOf?: string;
}

/** Checks one target before anything is written; returns whether it will be replaced, or the problem. */
export async function checkTarget(
  deps: Deps,
  disks: DiskRecord[],
  what: string,
  loc: BlobLocation,
  name: string,
  overwrite: boolean,
): Promise<Target | Problem> {
  const user = usedBy(disks, loc);
  if (user) {
    return {
      field: "name",
      message: `${what} ${loc.url} is the ${user.as} of registered disk ${user.disk.id}: a restore never writes over a registered disk; choose another {{name}}`,
    };
  }
  const props = await deps.storage.properties({ kind: "blob", location: loc });
  if (!props) return { what, location: loc, replace: false };
  const ours = props.metadata[RESTORE_AS_TAG] !== undefined;
  if (props.leased)
    return {
      field: "name",
      message: `${what} ${loc.url} exists and is leased (in use as a disk); choose another {{name}}`,
    };
  if (!ours)
    return {
      field: "name",
      message: `${what} ${loc.url} exists and was not made by a diskdelta restore; choose another {{name}} (it is never replaced)`,
    };
  if (props.metadata[RESTORE_AS_TAG] === name) {
    // The leftover of an interrupted restore to this very name (no disk registered it): take it over.
    deps.log.info(`${what} ${loc.url} is the leftover of an interrupted restore as ${name}; replacing it`);
    return { what, location: loc, replace: true, leftoverOf: props.metadata[RESTORE_ID_TAG] };
  }
  if (!overwrite)
    return {
      field: "name",
      message: `${what} ${loc.url} exists (an earlier diskdelta restore); choose another {{name}} or pass {{overwrite}} to replace it`,
    };
  return { what, location: loc, replace: true };
}

/** The checks of both targets of a restore as `name`: what will be replaced, and every problem. */
async function checkTargets(
  deps: Deps,
  disks: DiskRecord[],
  newDisk: BlobLocation,
  newBackup: BlobLocation,
  name: string,
  overwrite: boolean,
): Promise<{ targets: Target[]; problems: Problem[] }> {
  const targets: Target[] = [];
  const problems: Problem[] = [];
  for (const [what, loc] of [
    ["the restored disk", newDisk],
    ["the restored disk's backup blob", newBackup],
  ] as const) {
    const checked = await checkTarget(deps, disks, what, loc, name, overwrite);
    if ("message" in checked) problems.push(checked);
    else targets.push(checked);
  }
  return { targets, problems };
}

/**
 * Refuses, before anything is written or queued, a restore of `disk` (a page blob) as `name` whose
 * targets are refused: a target that is the source or backup blob of any registered disk (with or
 * without `overwrite`, naming that disk), a blob that exists and was not made by a diskdelta
 * restore, a leased one, another restore's target without `overwrite`. The HTTP API calls it, so
 * a request that can never be carried out is answered 400 at once instead of being queued and
 * refused in the worker's log; the restore itself checks the same again.
 */
export async function checkRestoreTargets(
  deps: Deps,
  disk: DiskRecord,
  name: string,
  overwrite: boolean,
): Promise<void> {
  const source = sourceBlobLocation(disk);
  if (!source) return;
  const pointBackup = backupLocation(disk);
  const newDisk = newDiskLocation(source, name);
  const newBackup = blobLocation(pointBackup, pointBackup.container, name);
  const { problems } = await checkTargets(
    deps,
    await deps.lineage.listDisks(),
    newDisk,
    newBackup,
    name,
    overwrite,
  );
  if (problems.length) throw new InputError(problems);
}

export async function restoreAsNewDisk(
  deps: Deps,
  diskId: string,
  options: RestoreOptions = {},
): Promise<RestoreResult> {
  const disk = await requireDisk(deps, diskId);
  const source = sourceBlobLocation(disk);
  if (!source)
    throw InputError.field(
      "diskId",
      `disk ${diskId} is a managed disk: restore it as a managed disk ({{asManagedDisk}})`,
    );
  const point = await selectPoint(deps.lineage, diskId, options.point ?? "latest");
  checkNotDamaged(point, options.allowDamaged);
  const name = options.name ?? defaultRestoreName(diskId, point);
  const nameProblem = checkDiskId(name);
  if (nameProblem)
    throw InputError.field(
      "name",
      options.name ? nameProblem : `${nameProblem}; choose a shorter one with {{name}}`,
    );
  const pointBackup = backupLocation(disk);
  const newDisk = newDiskLocation(source, name);
  const newBackup = blobLocation(pointBackup, pointBackup.container, name);

  // Every check before the first write, so bad input leaves nothing behind.
  const problems: Problem[] = [];
  const disks = await deps.lineage.listDisks();
  const registered = disks.find((d) => d.id === name);
  if (registered) {
    // The same restore delivered again (its first attempt was cut short after it registered the
    // disk, or the queue redelivered its message): done. Another restore to a registered name is refused.
    const done = options.restoreId
      ? await alreadyRestored(deps, registered, disk, point, options.restoreId)
      : undefined;
    if (done) return done;
    const restoredFrom = (
      await deps.storage
        .properties({ kind: "blob", location: sourceBlobLocation(registered) ?? newDisk })
        .catch(() => undefined)
    )?.metadata[RESTORE_OF_TAG];
    problems.push({
      field: "name",
      message:
        restoredFrom === `${disk.id}/${point.id}`
          ? `disk ${name} is already registered: it is the restore of point ${point.id} of disk ${disk.id} made earlier (it may have changed since); choose another {{name}} to restore it again`
          : `disk ${name} is already registered; choose another {{name}}`,
    });
  }
  const checked = await checkTargets(deps, disks, newDisk, newBackup, name, Boolean(options.overwrite));
  const targets = checked.targets;
  problems.push(...checked.problems);
  if (problems.length) throw new InputError(problems);

  // Held from before the snapshot is checked until the last write is done: retention spares it.
  const hold = await holdPoint(deps, point, `restore of ${point.id} as disk ${name}`);
  try {
    return await restoreHeld(deps, disk, point, name, targets, newDisk, newBackup, pointBackup, options);
  } finally {
    await hold.release();
  }
}

async function restoreHeld(
  deps: Deps,
  disk: DiskRecord,
  point: RestorePointRecord,
  name: string,
  targets: Target[],
  newDisk: BlobLocation,
  newBackup: BlobLocation,
  pointBackup: BlobLocation,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const { storage, lineage, log } = deps;
  const props = await storage.properties({
    kind: "blob",
    location: pointBackup,
    snapshot: point.backupSnapshot,
  });
  if (!props)
    throw InputError.field(
      "point",
      `restore point ${point.id}: its backup snapshot ${point.backupSnapshot} of ${pointBackup.url} is gone`,
    );
  const size = props.size;
  if (size !== point.size)
    throw new Error(
      `restore point ${point.id} is recorded as ${point.size} bytes but its snapshot is ${size}`,
    );
  // An interrupted restore to this name goes on under its own id: the rows it may have written are its own.
  const restoreId =
    options.restoreId ?? targets.find((t) => t.leftoverOf)?.leftoverOf ?? newId(deps.now(), "rs");
  const made: BlobAddress[] = [];
  const mark = {
    [RESTORE_OF_TAG]: `${disk.id}/${point.id}`,
    [RESTORE_AS_TAG]: name,
    [RESTORE_ID_TAG]: restoreId,
  };
  try {
    for (const t of targets) {
      if (t.replace)
        log.warn(`replacing ${t.location.url} (a restore target an earlier diskdelta restore made)`);
      // Replacing: delete first (with its snapshots), then create; never over a blob made by anyone else.
      if (t.replace) await storage.delete({ kind: "blob", location: t.location });
      await storage.create({ kind: "blob", location: t.location }, size, {
        ifNotExists: true,
        metadata: mark,
      });
      made.push({ kind: "blob", location: t.location });
    }
    log.info(
      `restore ${restoreId}: writing restore point ${point.id} (${size} bytes) to ${newDisk.url} and ${newBackup.url}`,
    );
    const diskAddress: BlobAddress = { kind: "blob", location: newDisk };
    const pointId = pointIdOf(restoreId);
    // The new disk's first point holds the very bytes read here: its digests are made on the way.
    const digests = new DigestWriter(storage, digestsLocation(newBackup, pointId));
    const backupAddress: BlobAddress = { kind: "blob", location: newBackup };
    let done = 0;
    const read = await readVerified(deps, pointBackup, point, size, 0, async (chunk, parts) => {
      for (const [i, range] of chunk.ranges.entries()) {
        await Promise.all([
          storage.write(diskAddress, range.start, parts[i]),
          storage.write(backupAddress, range.start, parts[i]),
        ]);
      }
      await digests.add({ index: chunk.index, md5: md5Of(parts), ranges: chunk.ranges });
      done += chunk.bytes;
      options.onProgress?.((chunk.index + 1) * 4 * 1024 * 1024, size, done);
    });
    const backupSnapshot = await storage.snapshot(backupAddress, tags(name, restoreId));
    made.push({ kind: "blob", location: newBackup, snapshot: backupSnapshot });
    await digests.finish(size, { diskId: name, pointId, backupSnapshot });
    made.push({ kind: "blob", location: digests.location });
    // The new disk's base, tagged like a run's snapshot so the engine's sweep keeps and recognises it.
    const baseSnapshot = await storage.snapshot(diskAddress, tags(name, restoreId));
    made.push({ kind: "blob", location: newDisk, snapshot: baseSnapshot });

    // The restore's run and point rows, then the disk row: registering is the last step, the one
    // that makes the restore visible, so a crash before it leaves rows a rerun (same id) rewrites.
    const at = deps.now().toISOString();
    const record: DiskRecord = {
      id: name,
      sourceUrl: newDisk.url,
      backupAccountUrl: newBackup.serviceUrl,
      backupContainer: newBackup.container,
      backupBlob: newBackup.blob,
      createdAt: at,
      baseSnapshot,
      baseSize: size,
      basePoint: pointId,
      // The promoted backup blob was written by this restore alone, with no fence: sequence number 0.
      baseFence: 0,
      lastRunId: restoreId,
      lastSuccessAt: at,
      intervalMinutes: disk.intervalMinutes,
      retainLast: disk.retainLast,
      retainDaily: disk.retainDaily,
      retainWeekly: disk.retainWeekly,
      retainMonthly: disk.retainMonthly,
    };
    await recordRestoreRows(deps, record, point, {
      restoreId,
      pointId,
      backupSnapshot,
      backupUrl: newBackup.url,
      at,
      digestsUrl: digests.location.url,
    });
    try {
      await lineage.addDisk(record);
    } catch (err) {
      const registered = err instanceof ConflictError ? await lineage.getDisk(name) : undefined;
      if (registered?.lastRunId !== restoreId) {
        if (err instanceof ConflictError)
          throw InputError.field(
            "name",
            `disk ${name} was registered meanwhile by someone else; choose another {{name}}`,
          );
        throw err;
      }
      // Our own registration, whose answer a retry lost: the restore is done.
    }
    made.length = 0; // registered: from here on nothing is rolled back
    return {
      restoreId,
      diskId: name,
      diskUrl: newDisk.url,
      baseSnapshot,
      backupBlobUrl: newBackup.url,
      backupSnapshot,
      restoredPoint: point,
      fromDiskId: disk.id,
      size,
      pointId,
      replaced: targets.filter((t) => t.replace).map((t) => t.location.url),
      checkedBy: read.checkedBy,
    };
  } catch (err) {
    // A point row this attempt wrote names snapshots deleted below: it goes too (a run row, in a
    // partition no registered disk owns, is unseen and rewritten by a rerun of the same restore).
    await lineage.deletePoint(name, pointIdOf(restoreId)).catch(() => undefined);
    const label = (a: BlobAddress) => `${a.location.url}${a.snapshot ? ` snapshot ${a.snapshot}` : ""}`;
    const left = made.reverse();
    while (left.length > 0) {
      const a = left[0];
      try {
        await storage.delete(a);
        left.shift();
      } catch (cleanupError) {
        log.warn(`could not remove ${label(a)} after the failed restore: ${messageOf(cleanupError)}`);
        // Storage that did not answer through every retry will not answer the next delete either:
        // stop here, so a dead endpoint costs one more give-up, not one per blob. What is left is
        // marked as this restore's target, and a rerun to the same name takes it over.
        if (isRetryable(cleanupError)) break;
        left.shift();
      }
    }
    if (left.length > 0)
      log.warn(
        `left behind by the failed restore (a rerun of the same restore as ${name} takes them over): ${left
          .filter((a) => !a.snapshot)
          .map(label)
          .join(", ")}`,
      );
    throw err;
  }
}

/**
 * The restore in the new disk's history: a succeeded run with trigger "restore" and its first
 * restore point (the promoted snapshot). Written before the disk row; a rerun of the same restore
 * (same id) rewrites them with what it made, so they always name the snapshots that exist.
 */
export async function recordRestoreRows(
  deps: Deps,
  disk: DiskRecord,
  from: RestorePointRecord,
  r: {
    restoreId: string;
    pointId: string;
    backupSnapshot: string;
    backupUrl: string;
    at: string;
    digestsUrl: string;
  },
): Promise<void> {
  const run: RunRecord = {
    id: r.restoreId,
    diskId: disk.id,
    trigger: "restore",
    kind: "full",
    state: "succeeded",
    startedAt: r.at,
    updatedAt: r.at,
    finishedAt: r.at,
    owner: "restore",
    leaseUntil: r.at,
    sourceSnapshot: disk.baseSnapshot,
    sourceSize: disk.baseSize,
    rangesWritten: 0,
    rangesCleared: 0,
    chunksTotal: 0,
    chunksDone: 0,
    bytesPlanned: 0,
    bytesCopied: 0,
    bytesCleared: 0,
    backupSnapshot: r.backupSnapshot,
    restorePoint: r.pointId,
    reason: `restored from disk ${from.diskId} restore point ${from.id}`,
  };
  const point: RestorePointRecord = {
    id: r.pointId,
    diskId: disk.id,
    runId: r.restoreId,
    kind: "full",
    backupSnapshot: r.backupSnapshot,
    backupUrl: r.backupUrl,
    sourceSnapshot: disk.baseSnapshot ?? "",
    size: disk.baseSize ?? 0,
    createdAt: r.at,
    capturedAt: pointTimeIso(from),
    digestsUrl: r.digestsUrl,
  };
  await put(
    () => deps.lineage.addRun(run),
    async () => {
      const found = await deps.lineage.getRun(disk.id, run.id);
      if (found) await deps.lineage.updateRun({ ...run, etag: found.etag });
    },
  );
  await put(
    () => deps.lineage.addPoint(point),
    async () => {
      const found = await deps.lineage.getPoint(disk.id, point.id);
      if (found) await deps.lineage.updatePoint({ ...point, etag: found.etag });
    },
  );
}

/** Adds a row, or (it exists: an earlier attempt of the same restore wrote it) replaces it. */
async function put(add: () => Promise<unknown>, replace: () => Promise<void>): Promise<void> {
  try {
    await add();
  } catch (err) {
    if (!(err instanceof ConflictError)) throw err;
    await replace();
  }
}

/**
 * The result of a restore that already happened: `registered` was made by restoring `point` of
 * `from` (its disk blob says so in its metadata), is whole (its first point recorded) and was made
 * by restore `restoreId`. A redelivery of that restore answers this instead of failing on the
 * name it registered itself.
 */
async function alreadyRestored(
  deps: Deps,
  registered: DiskRecord,
  from: DiskRecord,
  point: RestorePointRecord,
  restoreId: string,
): Promise<RestoreResult | undefined> {
  const source = sourceBlobLocation(registered);
  if (!source || !registered.basePoint || !registered.baseSnapshot) return undefined;
  if (registered.basePoint !== pointIdOf(restoreId)) return undefined;
  const props = await deps.storage.properties({ kind: "blob", location: source });
  if (props?.metadata[RESTORE_OF_TAG] !== `${from.id}/${point.id}`) return undefined;
  const first = await deps.lineage.getPoint(registered.id, registered.basePoint);
  if (!first) return undefined;
  deps.log.info(
    `disk ${registered.id} was restored from point ${point.id} already (restore ${first.runId}); nothing to do`,
  );
  return {
    restoreId: first.runId,
    diskId: registered.id,
    diskUrl: source.url,
    baseSnapshot: registered.baseSnapshot,
    backupBlobUrl: backupLocation(registered).url,
    backupSnapshot: first.backupSnapshot,
    restoredPoint: point,
    fromDiskId: from.id,
    size: registered.baseSize ?? point.size,
    pointId: first.id,
    replaced: [],
    checkedBy: first.digestsUrl ? "digests" : "range-md5",
  };
}
