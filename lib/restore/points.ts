/**
 * Picks the restore point a restore reads. A spec is a restore point id, `latest`, or an ISO-8601
 * time; a time picks the newest point that captured the disk at or before it. A point's time is
 * the time of the source snapshot it was copied from (the instant the disk looked like that),
 * falling back to the seal time where the snapshot id is not a time. Guarantees: a point is
 * returned only if it belongs to the disk; every way of not finding one is an InputError naming
 * what exists instead, so the CLI exits 2 with a message a person can act on.
 */
import { InputError } from "../backup/disks";
import type { Lineage, RestorePointRecord } from "../lineage/types";

/** When the point's disk state was captured, in milliseconds since the epoch. */
export function pointTime(point: RestorePointRecord): number {
  const captured = Date.parse(point.sourceSnapshot);
  return Number.isFinite(captured) ? captured : Date.parse(point.createdAt);
}

export function pointTimeIso(point: RestorePointRecord): string {
  return new Date(pointTime(point)).toISOString();
}

/** Ids made by `newId` with the restore-point prefix, e.g. p-20261125T114100123Z-3fa9c1. */
const POINT_ID = /^p-\d{8}T\d{9}Z-[0-9a-f]{6}$/;
/** A date, optionally with a time; anything looser (e.g. "yesterday") is refused rather than guessed. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

export async function selectPoint(
  lineage: Lineage,
  diskId: string,
  spec: string,
): Promise<RestorePointRecord> {
  const wanted = spec.trim();
  if (POINT_ID.test(wanted)) {
    const point = await lineage.getPoint(diskId, wanted);
    if (!point)
      throw new InputError([
        `restore point ${wanted} of disk ${diskId} does not exist; see 'diskdelta points ${diskId}'`,
      ]);
    return point;
  }
  if (wanted !== "latest" && !ISO_TIME.test(wanted)) {
    throw new InputError([
      `--point "${spec}" is neither a restore point id (p-…), 'latest', nor an ISO time such as 2026-11-25T11:41:00Z`,
    ]);
  }
  // Listing every point of one disk is bounded by retention (tens to hundreds of rows).
  const points = await lineage.listPoints(diskId);
  if (points.length === 0) {
    throw new InputError([
      `disk ${diskId} has no restore points yet; take one with 'diskdelta backup ${diskId}'`,
    ]);
  }
  // The store lists by seal time; capture times order the same way, but sort to not depend on it.
  const newestFirst = [...points].sort((a, b) => pointTime(b) - pointTime(a));
  if (wanted === "latest") return newestFirst[0];
  const at = Date.parse(wanted);
  if (!Number.isFinite(at)) throw new InputError([`--point "${spec}" is not a valid time`]);
  const found = newestFirst.find((p) => pointTime(p) <= at);
  if (!found) {
    const first = newestFirst[newestFirst.length - 1];
    throw new InputError([
      `no restore point of disk ${diskId} is at or before ${new Date(at).toISOString()}: the first one (${first.id}) is from ${pointTimeIso(first)}`,
    ]);
  }
  return found;
}
