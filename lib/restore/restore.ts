/**
 * Restore as a new disk, the second half of Microsoft's incremental-snapshot walkthrough: the
 * restore point's backup snapshot is promoted to a new backup blob (server-side copy inside the
 * backup account) and snapshotted; that snapshot is copied to the source account as a new disk
 * blob (server-side, read through a short-lived read-only SAS) and the new disk is snapshotted;
 * the new disk is registered with that snapshot as its base and the promoted blob as its backup
 * blob. Guarantees:
 *
 * - the new disk, its base snapshot and the promoted backup blob all equal the restore point
 *   byte for byte (Copy Blob on Azure; page by page on Azurite, whose Copy Blob shares page state
 *   between source and copy), and the restore point itself is never written, so the new disk's next backup diffs
 *   base → new snapshot against a backup blob that already mirrors the base: incremental;
 * - every check (names, existing blobs, registered disks) runs before anything is written, and a
 *   Copy Blob never replaces an existing blob unless `overwrite` is set (the service enforces it
 *   with If-None-Match: *, so a blob created meanwhile is not clobbered either);
 * - a failure deletes whatever this restore created (blobs, snapshots) before it is rethrown;
 *   registering the disk is the last step, so a restore is either registered whole or not at all;
 * - the restore point is held (see hold.ts) while it is read, so retention never deletes it
 *   under a running restore;
 * - no credential is logged, returned or stored: the SAS lives only in the copy request.
 */
import path from "node:path/posix";
import { NO_PROGRESS } from "../backup/claim";
import { BlobSASPermissions, generateBlobSASQueryParameters, type PageBlobClient } from "@azure/storage-blob";
import type { StorageClients } from "../azure/clients";
import { describeStorageError, errorInfo, isNotFound } from "../azure/errors";
import { withRetry, type RetryPolicy } from "../azure/retry";
import { blobLocation, type BlobLocation } from "../azure/urls";
import { checkDiskId, InputError, requireDisk } from "../backup/disks";
import { diskLocations, pointIdOf, retryPolicy, type EngineDeps } from "../backup/run";
import { DISK_TAG, RUN_TAG } from "../backup/snapshots";
import { forEachBounded } from "../concurrency";
import { downloadRange, validRangesSegment } from "../diff";
import { chunksOf, segments } from "../ranges";
import { newId, type DiskRecord, type RestorePointRecord } from "../lineage";
import { holdPoint } from "./hold";
import { pointTimeIso, selectPoint } from "./points";

export interface RestoreOptions {
  /** A restore point id, `latest`, or an ISO time (see selectPoint). */
  point: string;
  /** New disk id, also the name of the new disk blob (plus the source's extension) and of the promoted backup blob. */
  name?: string;
  overwrite?: boolean;
}

export interface RestoreResult {
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
  runId: string;
  pointId?: string;
}

/** How long a copy source SAS lives: Copy Blob of a 4 TiB disk can take hours on Azure; after the copy it is useless. */
const COPY_SAS_HOURS = 24;
/** How often a pending Copy Blob is polled: Azure copies at tens of MB/s, so seconds are enough. */
const COPY_POLL_MS = 2000;

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

async function exists(blob: PageBlobClient, policy: RetryPolicy): Promise<boolean> {
  try {
    await withRetry(policy, () => blob.getProperties());
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/**
 * A URL another account (or this one) can read one snapshot through: a service SAS where the
 * account key is configured, else a user delegation SAS signed with the identity's key. Async
 * Copy Blob takes no bearer token for its source, so a SAS is the only way across accounts.
 */
export async function readableSnapshotUrl(
  clients: StorageClients,
  loc: BlobLocation,
  snapshot: string,
): Promise<string> {
  if (clients.hasKey(loc.account)) return (await clients.sourceAuthorization(loc, snapshot)).url;
  const startsOn = new Date(Date.now() - 5 * 60_000);
  const expiresOn = new Date(Date.now() + COPY_SAS_HOURS * 3600_000);
  const key = await clients.blobService(loc).getUserDelegationKey(startsOn, expiresOn);
  const sas = generateBlobSASQueryParameters(
    {
      containerName: loc.container,
      blobName: loc.blob,
      snapshotTime: snapshot,
      permissions: BlobSASPermissions.parse("r"),
      startsOn,
      expiresOn,
    },
    key,
    loc.account,
  ).toString();
  return `${clients.pageBlob(loc, snapshot).url}&${sas}`;
}

/**
 * Azurite's Copy Blob hands the destination the very page-range list of its source (Azurite 3.37,
 * LokiBlobMetadataStore.startCopyFromURL), so a later write to the copy rewrites the source's
 * ranges too: restoring would corrupt the restore point it read. On Azurite, copy page by page
 * instead; on Azure the copy stays server-side.
 */
function sharesPagesOnCopy(server: string | undefined): boolean {
  return /azurite/i.test(server ?? "");
}

/** Copies `source` into `target` and waits for it; refuses to replace a blob unless `overwrite`. */
async function copyInto(
  deps: EngineDeps,
  target: PageBlobClient,
  source: { loc: BlobLocation; snapshot: string },
  overwrite: boolean,
  policy: RetryPolicy,
  onStarted: () => void,
): Promise<void> {
  const { clients } = deps;
  const from = clients.pageBlob(source.loc, source.snapshot);
  const props = await withRetry(policy, () => from.getProperties());
  const conditions = overwrite ? undefined : { ifNoneMatch: "*" };
  if (sharesPagesOnCopy(props._response.headers.get("server"))) {
    const size = props.contentLength ?? 0;
    await withRetry(policy, () => target.create(size, { conditions }));
    onStarted();
    for (const segment of segments(size, deps.config.segmentBytes)) {
      const valid = await validRangesSegment(from, segment, policy);
      await forEachBounded(chunksOf(valid), deps.config.copyConcurrency, async (chunk) => {
        for (const range of chunk.ranges) {
          const data = await downloadRange(from, range, policy);
          await withRetry(policy, () => target.uploadPages(data, range.start, data.length));
        }
      });
    }
    return;
  }
  const sourceUrl = await readableSnapshotUrl(clients, source.loc, source.snapshot);
  const poller = await withRetry(policy, () =>
    target.beginCopyFromURL(sourceUrl, { intervalInMs: COPY_POLL_MS, conditions }),
  );
  // Only now is the target ours to clean up: a refused copy (If-None-Match) left someone else's blob.
  onStarted();
  const done = await poller.pollUntilDone();
  if (done.copyStatus && done.copyStatus !== "success") {
    throw new Error(`the copy into ${target.url} ended ${done.copyStatus}`);
  }
}

async function snapshotTagged(
  blob: PageBlobClient,
  diskId: string,
  runId: string,
  policy: RetryPolicy,
): Promise<string> {
  const created = await withRetry(policy, () =>
    blob.createSnapshot({ metadata: { [DISK_TAG]: diskId, [RUN_TAG]: runId } }),
  );
  if (!created.snapshot) throw new Error(`the service returned no snapshot id for ${blob.url}`);
  return created.snapshot;
}

export async function restoreAsNewDisk(
  deps: EngineDeps,
  diskId: string,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const now = deps.now ?? (() => new Date());
  const { clients, lineage, log } = deps;
  const policy = retryPolicy(deps.config, log);
  const disk = await requireDisk(deps, diskId);
  const point = await selectPoint(lineage, diskId, options.point);
  const name = options.name ?? defaultRestoreName(diskId, point);
  const nameProblem = checkDiskId(name);
  if (nameProblem) {
    throw new InputError([
      options.name ? `--name: ${nameProblem}` : `${nameProblem}; choose a shorter one with --name`,
    ]);
  }
  const { source, backup: pointBackup } = diskLocations(disk);
  const newDisk = newDiskLocation(source, name);
  const newBackup = blobLocation(pointBackup, pointBackup.container, name);

  // Every check before the first write, so bad input leaves nothing behind.
  const problems: string[] = [];
  const existing = await lineage.listDisks();
  if (existing.some((d) => d.id === name)) {
    problems.push(`disk ${name} is already registered; choose another name with --name`);
  }
  const clash = existing.find(
    (d) =>
      d.backupAccountUrl === newBackup.serviceUrl &&
      d.backupContainer === newBackup.container &&
      d.backupBlob === newBackup.blob,
  );
  if (clash) problems.push(`disk ${clash.id} backs up to ${newBackup.url}; choose another name with --name`);
  const targets: Array<[string, BlobLocation]> = [
    ["the restored disk", newDisk],
    ["the restored disk's backup blob", newBackup],
  ];
  const existedBefore = new Map<string, boolean>();
  for (const [what, loc] of targets) {
    let found: boolean;
    try {
      found = await exists(clients.pageBlob(loc), policy);
    } catch (err) {
      throw new Error(describeStorageError(err, `${what} ${loc.url}`, "Storage Blob Data Contributor"));
    }
    existedBefore.set(loc.url, found);
    if (found && !options.overwrite) {
      problems.push(`${what} ${loc.url} already exists; choose another --name or pass --overwrite`);
    }
  }
  if (problems.length) throw new InputError(problems);
  // Held from before the snapshot is checked until the last copy is done: retention spares it.
  const hold = await holdPoint(deps, point, `restore of ${point.id} as disk ${name}`);
  try {
    return await restoreHeld();
  } finally {
    await hold.release();
  }

  async function restoreHeld(): Promise<RestoreResult> {
    try {
      await withRetry(policy, () => clients.pageBlob(pointBackup, point.backupSnapshot).getProperties());
    } catch (err) {
      if (isNotFound(err)) {
        throw new InputError([
          `restore point ${point.id}: its backup snapshot ${point.backupSnapshot} of ${pointBackup.url} is gone`,
        ]);
      }
      throw err;
    }

    const runId = newId(now(), "r");
    const undo: Array<{ what: string; run: () => Promise<unknown> }> = [];
    const overwritten: string[] = [];
    const remember = (loc: BlobLocation) => {
      const blob = clients.pageBlob(loc);
      if (existedBefore.get(loc.url)) {
        overwritten.push(loc.url);
        return;
      }
      undo.push({ what: loc.url, run: () => blob.deleteIfExists({ deleteSnapshots: "include" }) });
    };
    const forgetSnapshot = (loc: BlobLocation, snapshot: string) =>
      undo.push({
        what: `${loc.url} snapshot ${snapshot}`,
        run: () => clients.pageBlob(loc, snapshot).deleteIfExists(),
      });
    try {
      // 1. Promote: the restore point's snapshot becomes a blob of its own in the backup account.
      log.info(
        `restore ${runId}: promoting ${pointBackup.url} snapshot ${point.backupSnapshot} to ${newBackup.url}`,
      );
      await copyInto(
        deps,
        clients.pageBlob(newBackup),
        { loc: pointBackup, snapshot: point.backupSnapshot },
        Boolean(options.overwrite),
        policy,
        () => remember(newBackup),
      );
      const backupSnapshot = await snapshotTagged(clients.pageBlob(newBackup), name, runId, policy);
      forgetSnapshot(newBackup, backupSnapshot);

      // 2. Copy back to the source account as a new disk, from the promoted snapshot (immutable while copying).
      log.info(`restore ${runId}: copying to ${newDisk.url}`);
      await copyInto(
        deps,
        clients.pageBlob(newDisk),
        { loc: newBackup, snapshot: backupSnapshot },
        Boolean(options.overwrite),
        policy,
        () => remember(newDisk),
      );
      // 3. The new disk's base, tagged like a run's snapshot so the engine's sweep keeps and recognises it.
      const baseSnapshot = await snapshotTagged(clients.pageBlob(newDisk), name, runId, policy);
      forgetSnapshot(newDisk, baseSnapshot);
      const size = (await withRetry(policy, () => clients.pageBlob(newDisk, baseSnapshot).getProperties()))
        .contentLength;
      if (size !== point.size) {
        throw new Error(`the restored disk is ${size} bytes but restore point ${point.id} is ${point.size}`);
      }

      // 4. Register: the last step, and the one that makes the restore visible.
      const at = now().toISOString();
      const pointId = pointIdOf(runId);
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
        lastRunId: runId,
        lastSuccessAt: at,
      };
      try {
        await lineage.addDisk(record);
      } catch (err) {
        throw new InputError([`could not register disk ${name}: ${errorInfo(err).message}`]);
      }
      undo.length = 0; // registered: from here on nothing is rolled back
      const recorded = await recordRestoreRun(deps, record, point, {
        runId,
        pointId,
        backupSnapshot,
        backupUrl: newBackup.url,
        at,
      });
      return {
        diskId: name,
        diskUrl: newDisk.url,
        baseSnapshot,
        backupBlobUrl: newBackup.url,
        backupSnapshot,
        restoredPoint: point,
        fromDiskId: diskId,
        size,
        runId,
        pointId: recorded ? pointId : undefined,
      };
    } catch (err) {
      for (const step of undo.reverse()) {
        try {
          await withRetry(policy, step.run);
        } catch (cleanupError) {
          log.warn(
            `could not remove ${step.what} after the failed restore: ${errorInfo(cleanupError).message}`,
          );
        }
      }
      for (const url of overwritten) {
        log.warn(`${url} existed and was overwritten (--overwrite); it may hold a partial restore`);
      }
      throw err;
    }
  }
}

/**
 * The restore in the new disk's history: a succeeded run with trigger "restore" and its first
 * restore point (the promoted snapshot). Best effort: the disk is registered and backs up
 * correctly without them, so a failure here is a warning, not a failed restore.
 */
async function recordRestoreRun(
  deps: EngineDeps,
  disk: DiskRecord,
  from: RestorePointRecord,
  r: { runId: string; pointId: string; backupSnapshot: string; backupUrl: string; at: string },
): Promise<boolean> {
  try {
    await deps.lineage.addRun({
      id: r.runId,
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
      ...NO_PROGRESS,
      backupSnapshot: r.backupSnapshot,
      restorePoint: r.pointId,
      reason: `restored from disk ${from.diskId} restore point ${from.id}`,
    });
    await deps.lineage.addPoint({
      id: r.pointId,
      diskId: disk.id,
      runId: r.runId,
      kind: "full",
      backupSnapshot: r.backupSnapshot,
      backupUrl: r.backupUrl,
      sourceSnapshot: disk.baseSnapshot ?? "",
      size: disk.baseSize ?? 0,
      createdAt: r.at,
    });
    return true;
  } catch (err) {
    deps.log.warn(
      `restored disk ${disk.id} is registered, but its restore run was not recorded: ${errorInfo(err).message}`,
    );
    return false;
  }
}
