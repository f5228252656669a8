/**
 * Moving a disk registered as a page blob to the managed disk it was converted into (`disk set
 * <id> --source <managed disk id>`), without a full copy. Guarantees: the chain of restore points
 * continues (same disk id, same backup blob, every point kept); the last page-blob snapshot stays
 * the base until the next run seals (nothing deletes a base before), named so that the managed
 * source refuses to diff from it, so that run is a resync by compare against the same backup
 * blob and writes only the pages that differ; the disk must not be backing up while it moves; the
 * new source gets every check a registration makes. Leaked snapshots of the page blob (tagged by
 * runs that died) are deleted; the base goes when the first managed point is sealed.
 */
import { BusyError, InputError } from "../core/errors";
import { messageOf } from "../core/errors";
import { retryOnConflict } from "../core/retry";
import type { Deps } from "../deps";
import { sourceBlobLocation } from "../lineage/locations";
import { TERMINAL_STATES, type DiskRecord } from "../lineage/types";
import { isResourceId } from "../sources/catalog";
import { migratedBase } from "../sources/managedDisk";
import { PageBlobSource } from "../sources/pageBlob";
import { requireDisk } from "./register";

export interface Migration {
  disk: DiskRecord;
  /** The page blob it was. */
  from: string;
  /** Leaked page-blob snapshots deleted now. */
  sweptSnapshots: string[];
}

export async function moveToManagedDisk(deps: Deps, id: string, source: string): Promise<Migration> {
  const disk = await requireDisk(deps, id);
  if (!isResourceId(source))
    throw InputError.field(
      "source",
      `disk set moves a disk to the managed disk it was converted into: give a managed disk's resource id (/subscriptions/…/providers/Microsoft.Compute/disks/<name>); another page blob is a new disk (disk add)`,
    );
  const pageBlob = sourceBlobLocation(disk);
  if (!pageBlob)
    throw InputError.field(
      "source",
      `disk ${id} is already the managed disk ${disk.sourceDiskId}; only a disk registered as a page blob can move to its managed disk`,
    );
  await requireIdle(deps, disk);
  const inspected = await deps.sources.inspect(source, "source");
  const others = (await deps.lineage.listDisks()).filter((d) => d.id !== id);
  const twin = others.find(
    (d) => d.sourceDiskId !== undefined && d.sourceDiskId.toLowerCase() === inspected.sourceUrl.toLowerCase(),
  );
  if (twin)
    throw InputError.field(
      "source",
      `${inspected.sourceUrl} is already protected by disk ${twin.id}; two disks must not back up one source`,
    );
  if (disk.baseSize !== undefined && disk.baseSize !== inspected.size)
    deps.log.info(
      `disk ${id}: the managed disk exports ${inspected.size} bytes, the page blob's base was ${disk.baseSize}; the resync resizes the backup blob`,
    );

  const swept = await sweepPageBlob(deps, disk);
  const moved = await retryOnConflict(5, async () => {
    const row = await requireDisk(deps, id);
    await requireIdle(deps, row);
    if (row.sourceUrl !== disk.sourceUrl)
      throw InputError.field(
        "source",
        `disk ${id} was changed meanwhile (its source is now ${row.sourceUrl})`,
      );
    return deps.lineage.updateDisk({
      ...row,
      sourceUrl: inspected.sourceUrl,
      sourceDiskId: inspected.sourceDiskId,
      baseSnapshot: row.baseSnapshot ? migratedBase(pageBlob.url, row.baseSnapshot) : undefined,
      // The next run must seal a point even if no page differs: only then does the base become a
      // snapshot of the managed disk (an `unchanged` run would keep the page blob's for ever).
      baseFence: undefined,
    });
  });
  deps.log.info(
    `disk ${id} moved from page blob ${pageBlob.url} to managed disk ${inspected.sourceUrl}; its next backup is a resync by compare`,
  );
  return { disk: moved, from: pageBlob.url, sweptSnapshots: swept };
}

async function requireIdle(deps: Deps, disk: DiskRecord): Promise<void> {
  if (!disk.activeRunId) return;
  const run = await deps.lineage.getRun(disk.id, disk.activeRunId);
  if (run && !TERMINAL_STATES.includes(run.state))
    throw new BusyError(disk.id, run.id, run.owner, run.leaseUntil);
}

/** Tagged snapshots of the page blob that are not its base: left by runs that died. */
async function sweepPageBlob(deps: Deps, disk: DiskRecord): Promise<string[]> {
  const location = sourceBlobLocation(disk)!;
  const source = new PageBlobSource(deps.storage, location);
  const swept: string[] = [];
  try {
    for (const s of await source.taggedSnapshots(disk.id)) {
      if (s.id === disk.baseSnapshot) continue;
      await source.deleteSnapshot(s.id);
      swept.push(s.id);
    }
  } catch (err) {
    // The page blob may already be gone after the conversion; its snapshots went with it.
    deps.log.warn(`could not sweep the snapshots of ${location.url}: ${messageOf(err)}`);
  }
  return swept;
}
