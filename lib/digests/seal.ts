/**
 * The digests of a restore point just sealed (the after-seal hook makes them), so the point stays
 * verifiable after its source snapshot is deleted by the next backup. With the previous point's
 * digests (same size) and the set of windows the run touched, only those windows are read (and
 * windows whose valid ranges changed); without `touched` (a run resumed or fanned out) the
 * touched windows come from the service's diff of the two backup snapshots where the endpoint
 * answers diffs correctly; otherwise every window with data is read. These digests say what the
 * point held when sealed; `verify` while the source snapshot exists proves that equal to the disk
 * and records them anew.
 */
import type { Deps } from "../deps";
import { listChanges, listerOptionsOf } from "../diff/lister";
import { backupLocation } from "../lineage/locations";
import { patchPoint } from "../lineage/rows";
import type { DiskRecord, RestorePointRecord } from "../lineage/types";
import { WindowSet } from "../ranges";
import type { PageAddress } from "../storage/port";
import type { BlobLocation } from "../storage/urls";
import { digestsLocation } from "./format";
import type { WrittenWindows } from "./written";
import { buildDigests, DigestWriter, openDigests, type DigestCursor } from "./store";

export interface SealDigests {
  url: string;
  /** "incremental": only changed windows were read; "full": every window with data. */
  mode: "incremental" | "full";
  windowsRead: number;
  /** Windows whose digest came from the MD5 of what the run wrote (not read back). */
  windowsKnown: number;
}

/**
 * Records the digests of a point just sealed (the after-seal hook calls it), so the point stays
 * verifiable after its source snapshot is deleted by the next backup. With the previous point's
 * digests (same size) and the set of windows the run touched, only those windows are read;
 * without `touched` (a run resumed or fanned out), windows whose valid ranges changed are read and
 * the rest trusted only when the backup endpoint answers diffs correctly — otherwise every window
 * with data is read. These digests say what the point held when it was sealed; `verify` while the
 * source snapshot exists proves that equal to the disk and records them anew.
 */
export async function recordSealDigests(
  deps: Deps,
  disk: DiskRecord,
  point: RestorePointRecord,
  touched?: WindowSet,
  written?: WrittenWindows,
): Promise<SealDigests> {
  const backup = backupLocation(disk);
  const pointAddress: PageAddress = { kind: "blob", location: backup, snapshot: point.backupSnapshot };
  const points = await deps.lineage.listPoints(disk.id, 8);
  const at = points.findIndex((p) => p.id === point.id);
  const previous = at >= 0 ? points[at + 1] : undefined;
  let cursor: DigestCursor | undefined;
  let changed = touched;
  if (previous?.digestsUrl && previous.size === point.size && deps.config.diffMode !== "compare") {
    if (!changed) changed = await backupDiff(deps, backup, previous, point);
    if (changed) {
      const opened = await openDigests(
        deps.storage,
        digestsLocation(backup, previous.id),
        previous.backupSnapshot,
        point.size,
      );
      if (opened.ok) cursor = opened.cursor;
    }
  }
  const writer = new DigestWriter(deps.storage, digestsLocation(backup, point.id), {
    diskId: disk.id,
    pointId: point.id,
    backupSnapshot: point.backupSnapshot,
  });
  const built = await buildDigests(deps.storage, pointAddress, point.size, writer, {
    concurrency: deps.config.copyConcurrency,
    lister: listerOptionsOf(deps.config),
    previous: cursor,
    touched: cursor ? changed : undefined,
    written,
  });
  await patchPoint(deps.lineage, point, { digestsUrl: writer.location.url });
  return {
    url: writer.location.url,
    mode: cursor ? "incremental" : "full",
    windowsRead: built.windowsRead,
    windowsKnown: built.windowsKnown,
  };
}

/** The windows that changed between two backup snapshots, by the service's diff; undefined where it cannot be trusted. */
async function backupDiff(
  deps: Deps,
  backup: BlobLocation,
  previous: RestorePointRecord,
  point: RestorePointRecord,
): Promise<WindowSet | undefined> {
  const set = new WindowSet(point.size);
  try {
    for await (const piece of listChanges(
      deps.storage,
      {
        kind: "diff",
        address: { kind: "blob", location: backup, snapshot: point.backupSnapshot },
        base: { snapshot: previous.backupSnapshot },
      },
      0,
      point.size,
      listerOptionsOf(deps.config),
    )) {
      if (/azurite/i.test(piece.server ?? "")) return undefined;
      for (const r of piece.writes) set.addRange(r);
      for (const r of piece.clears) set.addRange(r);
    }
  } catch {
    return undefined;
  }
  return set;
}
