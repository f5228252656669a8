/** Guarded read-modify-write of one restore point row, again on a conflict (bounded). */
import { retryOnConflict } from "../core/retry";
import type { Lineage, RestorePointRecord } from "./types";

/** How often a point row update is retried when another writer (retention, a restore, verify) changed it. */
const ROW_UPDATE_ATTEMPTS = 5;

/** Applies `changes` to the point's row as it is now; a row deleted meanwhile (retention) is left alone. */
export async function patchPoint(
  lineage: Lineage,
  point: Pick<RestorePointRecord, "diskId" | "id">,
  changes: Partial<RestorePointRecord>,
): Promise<void> {
  await retryOnConflict(ROW_UPDATE_ATTEMPTS, async () => {
    const current = await lineage.getPoint(point.diskId, point.id);
    if (current) await lineage.updatePoint({ ...current, ...changes });
  });
}
