/**
 * The work that follows every sealed run (RunHooks.afterSeal, wired by the composition root):
 * record the new restore point's per-window digests, so `verify` can check it after the next
 * backup deletes its source snapshot, and every restore checks the bytes it writes; then apply the
 * disk's retention policy. Both are best effort with respect to the run (it is sealed already; the
 * run logs a hook's error and carries on), and each is repaired by the next seal or by hand: a
 * point left without digests can still be verified against its source snapshot while it is the
 * newest, and retention that stopped part-way finishes at the next apply.
 */
import { messageOf } from "../core/errors";
import { plural } from "../core/logger";
import type { Deps } from "../deps";
import { recordSealDigests } from "../digests/seal";
import type { DiskRecord, RunRecord } from "../lineage/types";
import type { WrittenWindows } from "../digests/written";
import type { WindowSet } from "../ranges";
import { applyRetention } from "../retention/apply";

export async function afterSeal(
  deps: Deps,
  disk: DiskRecord,
  run: RunRecord,
  touched?: WindowSet,
  written?: WrittenWindows,
): Promise<void> {
  if (run.restorePoint) {
    try {
      const point = await deps.lineage.getPoint(disk.id, run.restorePoint);
      // A resumed run may pass here twice; digests already recorded stand.
      if (point && !point.digestsUrl) {
        const digests = await recordSealDigests(deps, disk, point, touched, written);
        deps.log.info(
          `restore point ${point.id}: digests recorded in ${digests.url} (${digests.mode}, ${plural(digests.windowsRead, "window")} read, ${digests.windowsKnown} known from the copy)`,
        );
      }
    } catch (err) {
      // Retention must still run: a disk whose digests fail should not also grow without bound.
      deps.log.warn(`restore point ${run.restorePoint}: digests not recorded: ${messageOf(err)}`);
    }
  }
  const retention = await applyRetention(deps, disk.id);
  if (retention.deleted.length > 0 || retention.spared.length > 0) {
    deps.log.info(
      `retention of disk ${disk.id}: ${plural(retention.deleted.length, "restore point")} deleted` +
        (retention.spared.length ? `, ${retention.spared.length} spared (being read)` : ""),
    );
  }
}
