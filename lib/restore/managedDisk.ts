/**
 * Restore as a managed disk: a restore point becomes a new managed disk, registered so that its
 * next backup is incremental. The disk is made empty for an upload (`createOption: Upload`,
 * `uploadSizeBytes` = content + the 512-byte VHD footer), opened for writing (beginGetAccess
 * Write), given only the point's valid ranges — each window checked against the point's digests
 * before it is written (integrity.ts), copied server-side (Put Page From URL from the point's
 * snapshot, which is the very snapshot checked) where the endpoint supports it, streamed
 * otherwise — then its footer where the point has none, and closed (endGetAccess), which makes it
 * an ordinary disk. The point is promoted to a new backup blob beside it (as restore.ts does), the
 * new disk's first incremental snapshot becomes its base, and the disk is registered last.
 *
 * Guarantees (issue 13's restore rules): every check runs before anything is made; the target
 * disk is never a registered disk's source, never a disk diskdelta did not make (its tags say who
 * made it), never attached, and is replaced only with `overwrite` — or when it is the leftover of
 * an interrupted restore to the same name; a failure deletes whatever this restore made (disk,
 * blobs, snapshots) before it is rethrown; SAS URLs never leave the storage port.
 */
import { ConflictError, InputError, type Problem } from "../core/errors";
import { messageOf } from "../core/errors";
import type { Deps } from "../deps";
import { checkDiskId, requireDisk } from "../disks/register";
import { digestsLocation, md5Of } from "../digests/format";
import { DigestWriter } from "../digests/store";
import { newId } from "../lineage/ids";
import { backupLocation, pointIdOf } from "../lineage/locations";
import type { DiskRecord, RestorePointRecord } from "../lineage/types";
import { WINDOW_SIZE } from "../ranges";
import { parseResourceId, resourceIdOf, sameResource, type ResourceId } from "../azure/arm";
import type { ManagedDiskAdmin, ManagedDiskInfo, OpenedUpload } from "../sources/port";
import { tags } from "../sources/tagged";
import { isNotImplemented } from "../storage/errors";
import type { BlobAddress } from "../storage/port";
import { blobLocation, type BlobLocation } from "../storage/urls";
import { holdPoint } from "./hold";
import { checkNotDamaged, readVerified } from "./integrity";
import { selectPoint } from "./points";
import {
  checkTarget,
  defaultRestoreName,
  recordRestoreRows,
  RESTORE_AS_TAG,
  RESTORE_ID_TAG,
  RESTORE_OF_TAG,
  type RestoreOptions,
  type Target,
} from "./restore";
import { FOOTER_SIZE, fixedVhdFooter, isFixedVhdFooter } from "./vhd";

const MiB = 1024 * 1024;
/** Upload bounds (disks upload docs): content of 20 MiB to 32 TiB, plus the footer. */
const MIN_CONTENT = 20 * MiB;
const MAX_CONTENT = 32 * 1024 * 1024 * MiB;
const SKU = /^[A-Za-z0-9_]{1,40}$/;
const ZONE = /^[1-9]$/;
const LOCATION = /^[a-z0-9]{2,40}$/;

export interface ManagedRestoreOptions extends RestoreOptions {
  /** A resource group name (in the original disk's subscription) or a resource group id; default: the original disk's. */
  resourceGroup?: string;
  sku?: string;
  zone?: string;
  /** Azure region; default the original managed disk's. */
  location?: string;
}

export interface ManagedRestoreResult {
  restoreId: string;
  diskId: string;
  /** The new managed disk's resource id. */
  managedDiskId: string;
  location: string;
  sku: string;
  zone?: string;
  uploadSizeBytes: number;
  /** "kept": the point is a VHD with its footer; "written": diskdelta added one. */
  footer: "kept" | "written";
  baseSnapshot: string;
  backupBlobUrl: string;
  backupSnapshot: string;
  restoredPoint: RestorePointRecord;
  fromDiskId: string;
  size: number;
  pointId: string;
  replaced: string[];
  checkedBy: "digests" | "range-md5";
  /** How to put the disk to use (az CLI). */
  attach: string[];
}

interface Layout {
  uploadSizeBytes: number;
  /** Where diskdelta writes a footer, when the point has none. */
  footer?: { offset: number; bytes: Buffer };
}

/**
 * What the disk gets: a point that is a fixed VHD (a managed disk's export, a VHD page blob) is
 * uploaded as it is; anything else becomes content rounded up to whole 4 MiB windows (at least
 * the 20 MiB Azure requires), so the added footer has a window of its own, plus that footer.
 */
function layoutOf(size: number, last: Buffer | undefined): Layout {
  if (
    last &&
    isFixedVhdFooter(last, size) &&
    (size - FOOTER_SIZE) % MiB === 0 &&
    size - FOOTER_SIZE >= MIN_CONTENT
  )
    return { uploadSizeBytes: size };
  const content = Math.max(MIN_CONTENT, Math.ceil(size / WINDOW_SIZE) * WINDOW_SIZE);
  return {
    uploadSizeBytes: content + FOOTER_SIZE,
    footer: { offset: content, bytes: fixedVhdFooter(content) },
  };
}

/** The target's subscription and group from `--resource-group` (a name or an id) and the original disk. */
function targetGroup(
  raw: string | undefined,
  origin: ResourceId | undefined,
  diskId: string,
): { subscription: string; resourceGroup: string } {
  const given = raw?.trim();
  if (given && /^\/subscriptions\//i.test(given)) {
    const m = /^\/subscriptions\/([0-9a-f-]{36})\/resourceGroups\/([-\w.()]{1,90})\/?$/i.exec(given);
    if (!m)
      throw InputError.field(
        "resourceGroup",
        `"${given}" is not a resource group id: /subscriptions/<subscription id>/resourceGroups/<name>`,
      );
    return { subscription: m[1], resourceGroup: m[2] };
  }
  if (given && !/^[-\w.()]{0,89}[-\w()]$/.test(given))
    throw InputError.field(
      "resourceGroup",
      `"${given}" is not a resource group name (1-90 letters, digits, _ - . ( ))`,
    );
  if (!origin)
    throw InputError.field(
      "resourceGroup",
      `disk ${diskId} is a page blob, so no subscription can be derived: give {{resourceGroup}} as /subscriptions/<subscription id>/resourceGroups/<name>`,
    );
  return { subscription: origin.subscription, resourceGroup: given ?? origin.resourceGroup };
}

export async function restoreAsManagedDisk(
  deps: Deps,
  diskId: string,
  options: ManagedRestoreOptions = {},
): Promise<ManagedRestoreResult> {
  const managed = deps.sources.managed;
  if (!managed)
    throw InputError.field(
      "asManagedDisk",
      "restoring as a managed disk needs Azure Resource Manager access, which is not configured here",
    );
  const disk = await requireDisk(deps, diskId);
  const point = await selectPoint(deps.lineage, diskId, options.point ?? "latest");
  checkNotDamaged(point, options.allowDamaged);
  const name = options.name ?? defaultRestoreName(diskId, point);
  const problems: Problem[] = [];
  const nameProblem = checkDiskId(name);
  if (nameProblem)
    throw InputError.field(
      "name",
      options.name ? nameProblem : `${nameProblem}; choose a shorter one with {{name}}`,
    );
  if (options.sku !== undefined && !SKU.test(options.sku))
    problems.push({
      field: "sku",
      message: `"${options.sku}" is not a disk sku (e.g. Premium_LRS, StandardSSD_LRS)`,
    });
  if (options.zone !== undefined && !ZONE.test(options.zone))
    problems.push({ field: "zone", message: `"${options.zone}" is not an availability zone (1, 2 or 3)` });
  if (options.location !== undefined && !LOCATION.test(options.location))
    problems.push({
      field: "location",
      message: `"${options.location}" is not an Azure region name (e.g. westeurope)`,
    });
  const origin = disk.sourceDiskId ? parseResourceId(disk.sourceDiskId, "disks", "diskId") : undefined;
  const group = targetGroup(options.resourceGroup, origin, diskId);
  const targetId = resourceIdOf(group.subscription, group.resourceGroup, "disks", name);

  // Every check before the first write.
  const originInfo = origin ? await managed.getDisk(origin.id).catch(() => undefined) : undefined;
  const location = options.location ?? originInfo?.location;
  if (!location)
    problems.push({
      field: "location",
      message: `give {{location}}: disk ${diskId}'s region cannot be read (${origin ? "its managed disk is gone" : "it is a page blob"})`,
    });
  const sku = options.sku ?? originInfo?.sku ?? "Standard_LRS";
  const zone =
    options.zone ?? (originInfo && originInfo.location === location ? originInfo.zones?.[0] : undefined);
  const disks = await deps.lineage.listDisks();
  const registered = disks.find((d) => d.id === name);
  if (registered) {
    // The same restore run again (its first attempt was cut short after it registered the disk): done.
    const done = await alreadyRestored(deps, managed, registered, disk, point);
    if (done) return done;
    problems.push({ field: "name", message: `disk ${name} is already registered; choose another {{name}}` });
  }
  const user = disks.find((d) => sameResource(d.sourceDiskId, targetId));
  if (user)
    problems.push({
      field: "name",
      message: `managed disk ${targetId} is the source of registered disk ${user.id}: a restore never writes over a registered disk; choose another {{name}}`,
    });
  let existing: ManagedDiskInfo | undefined;
  try {
    existing = await managed.getDisk(targetId);
  } catch (err) {
    problems.push({ field: "resourceGroup", message: messageOf(err) });
  }
  let replaceDisk = false;
  let leftoverOf: string | undefined;
  if (existing && !user && !registered) {
    const madeAs = existing.tags[RESTORE_AS_TAG];
    if (existing.managedBy)
      problems.push({
        field: "name",
        message: `managed disk ${targetId} exists and is attached to ${existing.managedBy}; choose another {{name}}`,
      });
    else if (madeAs === undefined)
      problems.push({
        field: "name",
        message: `managed disk ${targetId} exists and was not made by a diskdelta restore; choose another {{name}} (it is never replaced)`,
      });
    else if (madeAs === name) {
      deps.log.info(
        `managed disk ${targetId} is the leftover of an interrupted restore as ${name}; replacing it`,
      );
      replaceDisk = true;
      leftoverOf = existing.tags[RESTORE_ID_TAG];
    } else if (!options.overwrite)
      problems.push({
        field: "name",
        message: `managed disk ${targetId} exists (an earlier diskdelta restore); choose another {{name}} or pass {{overwrite}} to replace it`,
      });
    else replaceDisk = true;
  }
  const pointBackup = backupLocation(disk);
  const newBackup = blobLocation(pointBackup, pointBackup.container, name);
  const backupTarget = await checkTarget(
    deps,
    disks,
    "the restored disk's backup blob",
    newBackup,
    name,
    Boolean(options.overwrite),
  );
  if ("message" in backupTarget) problems.push(backupTarget);
  const pointAddress: BlobAddress = { kind: "blob", location: pointBackup, snapshot: point.backupSnapshot };
  const props = await deps.storage.properties(pointAddress);
  if (!props)
    problems.push({
      field: "point",
      message: `restore point ${point.id}: its backup snapshot ${point.backupSnapshot} of ${pointBackup.url} is gone`,
    });
  else if (props.size !== point.size)
    throw new Error(
      `restore point ${point.id} is recorded as ${point.size} bytes but its snapshot is ${props.size}`,
    );
  if (problems.length) throw new InputError(problems);
  if (point.size > MAX_CONTENT + FOOTER_SIZE)
    throw InputError.field(
      "point",
      `restore point ${point.id} is ${point.size} bytes: a managed disk holds at most 32 TiB`,
    );

  const last =
    point.size >= FOOTER_SIZE
      ? await deps.storage.read(pointAddress, { start: point.size - FOOTER_SIZE, end: point.size })
      : undefined;
  const layout = layoutOf(point.size, last);
  const hold = await holdPoint(deps, point, `restore of ${point.id} as managed disk ${targetId}`);
  try {
    return await restoreHeld(deps, managed, {
      disk,
      point,
      name,
      targetId,
      location: location!,
      sku,
      zone,
      originInfo,
      replaceDisk,
      leftoverOf: leftoverOf ?? (backupTarget as Target).leftoverOf,
      backupTarget: backupTarget as Target,
      newBackup,
      pointBackup,
      pointAddress,
      layout,
      options,
    });
  } finally {
    await hold.release();
  }
}

interface Plan {
  disk: DiskRecord;
  point: RestorePointRecord;
  name: string;
  targetId: string;
  location: string;
  sku: string;
  zone?: string;
  originInfo?: ManagedDiskInfo;
  replaceDisk: boolean;
  /** The id of the interrupted restore whose leftovers this one takes over. */
  leftoverOf?: string;
  backupTarget: Target;
  newBackup: BlobLocation;
  pointBackup: BlobLocation;
  pointAddress: BlobAddress;
  layout: Layout;
  options: ManagedRestoreOptions;
}

async function restoreHeld(deps: Deps, managed: ManagedDiskAdmin, p: Plan): Promise<ManagedRestoreResult> {
  const { storage, lineage, log, config } = deps;
  const { point, name, targetId, layout, newBackup } = p;
  // An interrupted restore to this name goes on under its own id: the rows it may have written are its own.
  const restoreId = p.options.restoreId ?? p.leftoverOf ?? newId(deps.now(), "rs");
  const pointId = pointIdOf(restoreId);
  const mark = {
    [RESTORE_OF_TAG]: `${p.disk.id}/${point.id}`,
    [RESTORE_AS_TAG]: name,
    [RESTORE_ID_TAG]: restoreId,
  };
  /** What this restore made, undone in reverse order on failure. */
  const undo: Array<{ what: string; run: () => Promise<unknown> }> = [];
  let upload: OpenedUpload | undefined;
  const replaced: string[] = [];
  try {
    if (p.replaceDisk) {
      log.warn(`replacing managed disk ${targetId} (made by an earlier diskdelta restore)`);
      await managed.deleteDisk(targetId, RESTORE_AS_TAG);
      replaced.push(targetId);
    }
    const backupAddress: BlobAddress = { kind: "blob", location: newBackup };
    if (p.backupTarget.replace) {
      log.warn(`replacing ${newBackup.url} (a restore target an earlier diskdelta restore made)`);
      await storage.delete(backupAddress);
      replaced.push(newBackup.url);
    }
    await storage.create(backupAddress, layout.uploadSizeBytes, { ifNotExists: true, metadata: mark });
    undo.push({ what: newBackup.url, run: () => storage.delete(backupAddress) });
    await managed.createUploadDisk({
      id: targetId,
      location: p.location,
      uploadSizeBytes: layout.uploadSizeBytes,
      sku: p.sku,
      zone: p.zone,
      osType: p.originInfo?.osType,
      hyperVGeneration: p.originInfo?.hyperVGeneration,
      tags: mark,
    });
    undo.push({ what: `managed disk ${targetId}`, run: () => managed.deleteDisk(targetId, RESTORE_AS_TAG) });
    upload = await managed.openForUpload(targetId);
    const target = upload.address;
    log.info(
      `restore ${restoreId}: writing restore point ${point.id} (${point.size} bytes) to managed disk ${targetId} (${layout.uploadSizeBytes} bytes) and ${newBackup.url}`,
    );

    let serverSide = config.copyMode !== "streamed";
    const toDisk = async (start: number, data: Buffer) => {
      if (serverSide) {
        try {
          // The point's snapshot is immutable: the service copies exactly the bytes just checked.
          await storage.writeFrom(target, start, p.pointAddress, data.length);
          return;
        } catch (err) {
          if (config.copyMode === "server" || !isNotImplemented(err)) throw err;
          serverSide = false;
        }
      }
      await storage.write(target, start, data);
    };
    const digests = new DigestWriter(storage, digestsLocation(newBackup, pointId));
    let done = 0;
    const read = await readVerified(deps, p.pointBackup, point, point.size, 0, async (chunk, parts) => {
      for (const [i, range] of chunk.ranges.entries())
        await Promise.all([
          toDisk(range.start, parts[i]),
          storage.write(backupAddress, range.start, parts[i]),
        ]);
      await digests.add({ index: chunk.index, md5: md5Of(parts), ranges: chunk.ranges });
      done += chunk.bytes;
      p.options.onProgress?.((chunk.index + 1) * WINDOW_SIZE, point.size, done);
    });
    if (layout.footer) {
      const { offset, bytes } = layout.footer;
      await Promise.all([storage.write(target, offset, bytes), storage.write(backupAddress, offset, bytes)]);
      await digests.add({
        index: offset / WINDOW_SIZE,
        md5: md5Of([bytes]),
        ranges: [{ start: offset, end: offset + bytes.length }],
      });
    }
    // Closing the upload makes it an ordinary disk; nothing may be written to it after this.
    await upload.close();
    upload = undefined;

    const backupSnapshot = await storage.snapshot(backupAddress, tags(name, restoreId));
    await digests.finish(layout.uploadSizeBytes, { diskId: name, pointId, backupSnapshot });
    undo.push({
      what: digests.location.url,
      run: () => storage.delete({ kind: "blob", location: digests.location }),
    });
    // The new disk's base: its first incremental snapshot, tagged like a run's so the sweep knows it.
    const source = deps.sources.of({ id: name, sourceUrl: targetId, sourceDiskId: targetId });
    const base = await source.snapshotFor(name, restoreId);
    undo.push({ what: `snapshot ${base.id}`, run: () => source.deleteSnapshot(base.id) });
    if (base.size !== layout.uploadSizeBytes)
      throw new Error(
        `the restored disk ${targetId} exports ${base.size} bytes, not the ${layout.uploadSizeBytes} uploaded`,
      );

    const at = deps.now().toISOString();
    const record: DiskRecord = {
      id: name,
      sourceUrl: targetId,
      sourceDiskId: targetId,
      backupAccountUrl: newBackup.serviceUrl,
      backupContainer: newBackup.container,
      backupBlob: newBackup.blob,
      createdAt: at,
      baseSnapshot: base.id,
      baseSize: layout.uploadSizeBytes,
      basePoint: pointId,
      // The promoted backup blob was written by this restore alone, with no fence: sequence number 0.
      baseFence: 0,
      lastRunId: restoreId,
      lastSuccessAt: at,
      intervalMinutes: p.disk.intervalMinutes,
      retainLast: p.disk.retainLast,
      retainDaily: p.disk.retainDaily,
      retainWeekly: p.disk.retainWeekly,
      retainMonthly: p.disk.retainMonthly,
    };
    // The run and point rows first, the disk row last (as restore.ts does): a crash in between
    // leaves rows that a rerun of the same restore (same id) rewrites.
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
      const found = err instanceof ConflictError ? await lineage.getDisk(name) : undefined;
      if (found?.lastRunId !== restoreId) {
        if (err instanceof ConflictError)
          throw InputError.field(
            "name",
            `disk ${name} was registered meanwhile by someone else; choose another {{name}}`,
          );
        throw err;
      }
      // Our own registration, whose answer a retry lost: the restore is done.
    }
    undo.length = 0; // registered: from here on nothing is rolled back
    return {
      restoreId,
      diskId: name,
      managedDiskId: targetId,
      location: p.location,
      sku: p.sku,
      zone: p.zone,
      uploadSizeBytes: layout.uploadSizeBytes,
      footer: layout.footer ? "written" : "kept",
      baseSnapshot: base.id,
      backupBlobUrl: newBackup.url,
      backupSnapshot,
      restoredPoint: point,
      fromDiskId: p.disk.id,
      size: point.size,
      pointId,
      replaced,
      checkedBy: read.checkedBy,
      attach: attachCommands(targetId, p.originInfo?.osType),
    };
  } catch (err) {
    await upload?.close().catch(() => undefined);
    // A point row this attempt wrote names snapshots deleted below: it goes too.
    await lineage.deletePoint(name, pointId).catch(() => undefined);
    for (const u of undo.reverse()) {
      try {
        await u.run();
      } catch (cleanupError) {
        log.warn(`could not remove ${u.what} after the failed restore: ${messageOf(cleanupError)}`);
      }
    }
    throw err;
  }
}

/**
 * The result of a restore that already happened: `registered` is the managed disk made by
 * restoring `point` of `from` (its tags say so) and is whole (its first point recorded).
 */
async function alreadyRestored(
  deps: Deps,
  managed: ManagedDiskAdmin,
  registered: DiskRecord,
  from: DiskRecord,
  point: RestorePointRecord,
): Promise<ManagedRestoreResult | undefined> {
  if (!registered.sourceDiskId || !registered.basePoint || !registered.baseSnapshot) return undefined;
  const made = await managed.getDisk(registered.sourceDiskId).catch(() => undefined);
  if (made?.tags[RESTORE_OF_TAG] !== `${from.id}/${point.id}`) return undefined;
  const first = await deps.lineage.getPoint(registered.id, registered.basePoint);
  if (!first) return undefined;
  deps.log.info(
    `disk ${registered.id} was restored from point ${point.id} already (restore ${first.runId}); nothing to do`,
  );
  const size = registered.baseSize ?? made.sizeBytes + FOOTER_SIZE;
  return {
    restoreId: first.runId,
    diskId: registered.id,
    managedDiskId: made.id,
    location: made.location,
    sku: made.sku ?? "",
    zone: made.zones?.[0],
    uploadSizeBytes: size,
    footer: size === point.size ? "kept" : "written",
    baseSnapshot: registered.baseSnapshot,
    backupBlobUrl: backupLocation(registered).url,
    backupSnapshot: first.backupSnapshot,
    restoredPoint: point,
    fromDiskId: from.id,
    size: point.size,
    pointId: first.id,
    replaced: [],
    checkedBy: first.digestsUrl ? "digests" : "range-md5",
    attach: attachCommands(made.id, made.osType),
  };
}

/** `az` commands that put the restored disk to use: as a data disk, or as a new VM's OS disk. */
export function attachCommands(managedDiskId: string, osType?: string): string[] {
  return [
    `az vm disk attach --resource-group <vm's resource group> --vm-name <vm> --name ${managedDiskId}`,
    `az vm create --resource-group <group> --name <new vm> --attach-os-disk ${managedDiskId} --os-type ${(osType ?? "linux").toLowerCase()}`,
  ];
}
