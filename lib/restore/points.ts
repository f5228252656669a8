/**
 * Picks the restore point a restore or verify reads. A spec is a restore point id, `latest` (the
 * default, as restic's), or an ISO-8601 time; a time picks the newest point that captured the
 * disk at or before it (see pointTime in lib/lineage). Guarantees: a point is returned only if it
 * belongs to the disk; a malformed spec is an InputError on field `point`, a well-formed one that
 * finds nothing a NotFoundError naming what exists instead.
 */
import { InputError, NotFoundError } from "../core/errors";
import { pointTime, pointTimeIso, type Lineage, type RestorePointRecord } from "../lineage/types";

/** Ids made by `newId` with the restore-point prefix, e.g. p-20261125T114100123Z-3fa9c1. */
const POINT_ID = /^p-\d{8}T\d{9}Z-[0-9a-f]{6}$/;
/** A date, optionally with a time; anything looser (e.g. "yesterday") is refused rather than guessed. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

export async function selectPoint(
  lineage: Lineage,
  diskId: string,
  spec = "latest",
): Promise<RestorePointRecord> {
  const wanted = spec.trim();
  if (POINT_ID.test(wanted)) {
    const point = await lineage.getPoint(diskId, wanted);
    if (!point) throw new NotFoundError(`restore point ${wanted} of disk ${diskId} does not exist`, "point");
    return point;
  }
  if (wanted !== "latest" && !ISO_TIME.test(wanted)) {
    throw InputError.field(
      "point",
      `"${spec}" is neither a restore point id (p-…), 'latest', nor an ISO time such as 2026-11-25T11:41:00Z`,
    );
  }
  const at = wanted === "latest" ? Infinity : Date.parse(wanted);
  if (!Number.isFinite(at) && wanted !== "latest")
    throw InputError.field("point", `"${spec}" is not a valid time`);
  // Listing every point of one disk is bounded by retention (tens to hundreds of rows).
  const points = await lineage.listPoints(diskId);
  if (points.length === 0)
    throw new NotFoundError(`disk ${diskId} has no restore points yet; take one with a backup`, "point");
  // The store lists by seal time; capture times order the same way, but sort to not depend on it.
  const newestFirst = [...points].sort((a, b) => pointTime(b) - pointTime(a));
  const found = newestFirst.find((p) => pointTime(p) <= at);
  if (!found) {
    const first = newestFirst[newestFirst.length - 1];
    throw new NotFoundError(
      `no restore point of disk ${diskId} is at or before ${new Date(at).toISOString()}: the first one (${first.id}) is from ${pointTimeIso(first)}`,
      "point",
    );
  }
  return found;
}

/** True for a spec that names one point by id, 'latest' or a time (a well-formed spec). */
export function isPointSpec(spec: string): boolean {
  const s = spec.trim();
  return s === "latest" || POINT_ID.test(s) || (ISO_TIME.test(s) && Number.isFinite(Date.parse(s)));
}
