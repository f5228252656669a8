/**
 * Applies a disk's retention policy: plans with `planRetention` over every restore point of the
 * disk, then deletes each point that goes, in this order: its backup snapshot, its digests blob,
 * its lineage row. Guarantees:
 *
 * - never deletes the newest restore point, the disk's base point, or a point a restore is
 *   reading: before deleting, the point's row is marked (`deletingSince`) under its ETag unless
 *   it holds a future `readingUntil`; a reader's hold is written under the same ETag and refused
 *   on a marked row (lib/restore/hold.ts), so no restore starts reading a point being deleted;
 * - idempotent and self-repairing: the row goes last, so a crash at any instant leaves at worst
 *   a row whose snapshot is gone (a restore of it fails cleanly, "its backup snapshot is gone",
 *   before writing anything), and that row is still in the next plan (the plan is monotone, see
 *   policy.ts), whose deletes treat "already gone" as done. The other order would leave a
 *   snapshot no row names: invisible, billed, and only findable by a sweep that would have to
 *   tell it apart from a snapshot a run is sealing right now;
 * - a dry run reads and plans only;
 * - only snapshots of this disk's backup blob named by its own rows are deleted.
 */
import { NotFoundError } from "../core/errors";
import { plural } from "../core/logger";
import { messageOf } from "../core/errors";
import { retryOnConflict } from "../core/retry";
import type { Deps } from "../deps";
import { digestsLocation } from "../digests/format";
import { backupLocation } from "../lineage/locations";
import { pointTime, type RestorePointRecord } from "../lineage/types";
import {
  describePolicy,
  planRetention,
  policyOf,
  type RetentionDecision,
  type RetentionPolicy,
} from "./policy";

export interface RetentionOptions {
  dryRun?: boolean;
}

export interface PlannedPoint extends RetentionDecision {
  backupSnapshot: string;
  createdAt: string;
}

export interface RetentionResult {
  diskId: string;
  policy: RetentionPolicy;
  dryRun: boolean;
  keep: PlannedPoint[];
  /** What the plan deletes (in a dry run, what it would delete). */
  delete: PlannedPoint[];
  /** Ids actually deleted (empty in a dry run). */
  deleted: string[];
  /** Points the plan deleted but that were spared at the last moment, with why (a restore began reading). */
  spared: Array<{ id: string; reason: string }>;
}

export async function applyRetention(
  deps: Deps,
  diskId: string,
  options: RetentionOptions = {},
): Promise<RetentionResult> {
  const disk = await deps.lineage.getDisk(diskId);
  if (!disk) throw new NotFoundError(`disk ${diskId} is not registered`, "diskId");
  const retention = policyOf(disk);
  // Every point of the disk: retention bounds their number, so the list stays small.
  const points = await deps.lineage.listPoints(diskId);
  const byId = new Map(points.map((p) => [p.id, p]));
  const pinned = new Map<string, string>();
  if (disk.basePoint) pinned.set(disk.basePoint, "the disk's base point (the next backup diffs from it)");
  const plan = planRetention(
    points.map((p) => ({ id: p.id, time: pointTime(p), readingUntil: p.readingUntil })),
    retention,
    deps.now(),
    pinned,
  );
  const withRecord = (d: RetentionDecision): PlannedPoint => {
    const p = byId.get(d.id)!;
    return { ...d, backupSnapshot: p.backupSnapshot, createdAt: p.createdAt };
  };
  const result: RetentionResult = {
    diskId,
    policy: retention,
    dryRun: Boolean(options.dryRun),
    keep: plan.keep.map(withRecord),
    delete: plan.delete.map(withRecord),
    deleted: [],
    spared: [],
  };
  if (options.dryRun) return result;
  await unmarkKept(
    deps,
    plan.keep.map((k) => byId.get(k.id)!).filter((p) => p.deletingSince),
  );
  if (plan.delete.length === 0) return result;

  const backup = backupLocation(disk);
  deps.log.info(
    `retention of disk ${diskId} (${describePolicy(retention)}): deleting ${plan.delete.length} of ${plural(points.length, "restore point")}`,
  );
  // Oldest first: an interrupted apply has thinned the far past, not left holes among recent points.
  for (const d of [...plan.delete].reverse()) {
    const marked = await markForDeletion(deps, diskId, d.id);
    if (!marked) continue; // another apply got here first
    if ("spare" in marked) {
      result.spared.push({ id: d.id, reason: marked.spare });
      continue;
    }
    const current = marked.point;
    try {
      await deps.storage.delete({ kind: "blob", location: backup, snapshot: current.backupSnapshot });
      await deps.storage.delete({ kind: "blob", location: digestsLocation(backup, current.id) });
      await deps.lineage.deletePoint(diskId, current.id);
      result.deleted.push(current.id);
      deps.log.info(`deleted restore point ${current.id} (backup snapshot ${current.backupSnapshot})`);
    } catch (err) {
      // The next apply finds this point in its plan again and finishes it.
      throw new Error(
        `retention of disk ${diskId} stopped at restore point ${current.id}: ${messageOf(err)}; ` +
          `${plural(result.deleted.length, "point")} deleted so far, the rest go at the next apply`,
        { cause: err },
      );
    }
  }
  return result;
}

/** Guarded row updates retried when a reader or verify changed the row meanwhile. */
const MARK_ATTEMPTS = 8;

/**
 * Marks a point as being deleted, under its row's ETag, unless a reader holds it. A hold and the
 * mark race on the same ETag, so either the reader's hold landed first (the point is spared) or
 * the mark did (the reader's hold fails and it reads nothing). Undefined when the row is gone.
 */
async function markForDeletion(
  deps: Deps,
  diskId: string,
  pointId: string,
): Promise<{ point: RestorePointRecord } | { spare: string } | undefined> {
  return retryOnConflict(MARK_ATTEMPTS, async () => {
    const current = await deps.lineage.getPoint(diskId, pointId);
    if (!current) return undefined;
    if (current.deletingSince) return { point: current }; // an earlier apply marked it and stopped
    const spare = spareReason(current, deps.now());
    if (spare) return { spare };
    return { point: await deps.lineage.updatePoint({ ...current, deletingSince: deps.now().toISOString() }) };
  });
}

/**
 * A point the plan keeps but an interrupted apply had marked (the policy changed since, or it
 * became the base): take the mark off, so restores may read it again. Best effort.
 */
async function unmarkKept(deps: Deps, points: RestorePointRecord[]): Promise<void> {
  for (const p of points) {
    try {
      await deps.lineage.updatePoint({ ...p, deletingSince: undefined });
    } catch (err) {
      deps.log.warn(`could not clear the delete mark of restore point ${p.id}: ${messageOf(err)}`);
    }
  }
}

function spareReason(point: RestorePointRecord, now: Date): string | undefined {
  if (point.readingUntil && Date.parse(point.readingUntil) > now.getTime())
    return `a restore reads it until ${point.readingUntil}`;
  return undefined;
}
