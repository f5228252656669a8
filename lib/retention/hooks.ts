/**
 * The work that follows every sealed run (RunHooks.afterSeal, wired in lib/engine.ts): record the
 * new restore point's per-window digests, so `verify` can check it after the next backup deletes
 * its source snapshot; then apply the disk's retention policy. Both are best effort with respect
 * to the run (it is sealed already; lib/backup/run.ts logs a hook's error and carries on), and
 * each is repaired by the next seal or by hand: a point left without digests can still be
 * verified against its source snapshot while it is the newest, and retention that stopped
 * part-way finishes at the next apply (`diskdelta prune` runs the same code).
 */
import { errorInfo } from "../azure/errors";
import type { EngineDeps } from "../backup/run";
import type { DiskRecord, RunRecord } from "../lineage/types";
import { recordSealDigests } from "../restore/verify";
import { applyRetention } from "./apply";

export async function afterSeal(deps: EngineDeps, disk: DiskRecord, run: RunRecord): Promise<void> {
  if (run.restorePoint) {
    try {
      const point = await deps.lineage.getPoint(disk.id, run.restorePoint);
      // A resumed run may pass here twice; digests already recorded stand.
      if (point && !point.digestsUrl) {
        const digests = await recordSealDigests(deps, disk, point);
        deps.log.info(
          `restore point ${point.id}: digests recorded in ${digests.url} (${digests.mode}, ${digests.windowsRead} windows read)`,
        );
      }
    } catch (err) {
      // Retention must still run: a disk whose digests fail should not also grow without bound.
      deps.log.warn(`restore point ${run.restorePoint}: digests not recorded: ${errorInfo(err).message}`);
    }
  }
  const retention = await applyRetention(deps, disk.id);
  if (retention.deleted.length > 0 || retention.spared.length > 0) {
    deps.log.info(
      `retention of disk ${disk.id}: ${retention.deleted.length} restore points deleted` +
        (retention.spared.length ? `, ${retention.spared.length} spared (being read)` : ""),
    );
  }
}
