/**
 * Restores as the app runs them: a request is checked and resolved at once (the disk exists, the
 * point spec names one restore point, the new disk's name is valid and free, the point is not
 * recorded as damaged), then queued, because a restore copies a whole disk and outlives an HTTP
 * answer; the restore-requests worker runs it. One id per restore (`rs-…`): the request, its log
 * lines and the restored disk's first run. Guarantees: the message carries the resolved point id
 * and name, so a backup sealed meanwhile does not change what `latest` restores; delivery is
 * at-least-once, and a message whose restore already registered its disk is acknowledged without
 * copying again; bad input is refused with a 4xx before anything is queued; a restore that can
 * never succeed is logged with its reason and not retried, while a transient failure is rethrown
 * for the host to retry.
 */
import { ConflictError, InputError, IntegrityError, messageOf } from "../core/errors";
import { checkDiskId, requireDisk } from "../disks/register";
import { newId } from "../lineage/ids";
import type { RestorePointRecord } from "../lineage/types";
import { decodeRestoreRequest, QUEUES, type RestoreRequestMessage } from "../queues/messages";
import { checkNotDamaged } from "../restore/integrity";
import { selectPoint } from "../restore/points";
import { restoreAsManagedDisk, type ManagedRestoreResult } from "../restore/managedDisk";
import {
  checkRestoreTargets,
  defaultRestoreName,
  restoreAsNewDisk,
  type RestoreResult,
} from "../restore/restore";
import type { App } from "./context";

export interface RestoreRequestInput {
  /** A restore point id, `latest` (the default), or an ISO time (see selectPoint). */
  point?: string;
  name?: string;
  overwrite?: boolean;
  allowDamaged?: boolean;
  /** Restore as a new managed disk; the four fields below place it (default: the original disk's). */
  asManagedDisk?: boolean;
  resourceGroup?: string;
  sku?: string;
  zone?: string;
  location?: string;
}

const MANAGED_ONLY = ["resourceGroup", "sku", "zone", "location"] as const;

export interface RestoreRequested {
  requestId: string;
  message: RestoreRequestMessage;
  point: RestorePointRecord;
}

export async function requestRestore(
  app: App,
  diskId: string,
  input: RestoreRequestInput,
): Promise<RestoreRequested> {
  const misplaced = MANAGED_ONLY.filter((k) => input[k] !== undefined && !input.asManagedDisk);
  if (misplaced.length)
    throw new InputError(
      misplaced.map((k) => ({ field: k, message: "applies only with {{asManagedDisk}}" })),
    );
  const disk = await requireDisk(app, diskId);
  if (disk.sourceDiskId && !input.asManagedDisk)
    throw InputError.field(
      "asManagedDisk",
      `disk ${diskId} is a managed disk: restore it as a managed disk ({{asManagedDisk}})`,
    );
  if (input.asManagedDisk && !app.sources.managed)
    throw InputError.field(
      "asManagedDisk",
      "restoring as a managed disk needs Azure Resource Manager access, which is not configured here",
    );
  const point = await selectPoint(app.lineage, diskId, input.point ?? "latest");
  checkNotDamaged(point, input.allowDamaged);
  const name = input.name ?? defaultRestoreName(diskId, point);
  const nameProblem = checkDiskId(name);
  if (nameProblem)
    throw InputError.field(
      "name",
      input.name !== undefined ? nameProblem : `${nameProblem}; choose a shorter one with {{name}}`,
    );
  // The worker checks again (a disk may be registered meanwhile); this answers the common case now.
  if (await app.lineage.getDisk(name))
    throw new ConflictError(`disk ${name} is already registered; choose another name`);
  // A target that is a registered disk's blob, or a blob diskdelta did not make: 400 now, not a refusal in the worker's log.
  if (!disk.sourceDiskId && !input.asManagedDisk)
    await checkRestoreTargets(app, disk, name, Boolean(input.overwrite));
  const requestId = newId(app.now(), "rs");
  const message: RestoreRequestMessage = {
    diskId,
    point: point.id,
    name,
    overwrite: input.overwrite ? true : undefined,
    allowDamaged: input.allowDamaged ? true : undefined,
    asManagedDisk: input.asManagedDisk
      ? { resourceGroup: input.resourceGroup, sku: input.sku, zone: input.zone, location: input.location }
      : undefined,
    requestId,
  };
  await app.queues.send(QUEUES.restoreRequests, message);
  app.log.info(`queued restore ${requestId}: disk ${diskId} point ${point.id} as disk ${name}`);
  return { requestId, message, point };
}

export type RestoreOutcome =
  | { status: "restored"; result: RestoreResult | ManagedRestoreResult }
  | { status: "already-restored"; diskId: string }
  | { status: "refused"; reason: string };

/**
 * Runs one queued restore. A redelivered message whose restore already registered its disk is
 * done: the disk of that name was made by this very restore (its first run has the restore's id).
 * A disk of that name registered otherwise is not this restore's, and the restore is refused.
 */
export async function handleRestoreRequest(app: App, msg: RestoreRequestMessage): Promise<RestoreOutcome> {
  const label = `restore ${msg.requestId} (disk ${msg.diskId} point ${msg.point} as ${msg.name ?? "default name"})`;
  if (msg.name) {
    const target = await app.lineage.getDisk(msg.name);
    if (target && target.lastRunId === msg.requestId) {
      app.log.info(`${label}: already done, disk ${msg.name} is registered`);
      return { status: "already-restored", diskId: msg.name };
    }
  }
  try {
    const common = {
      point: msg.point,
      name: msg.name,
      overwrite: msg.overwrite,
      allowDamaged: msg.allowDamaged,
      restoreId: msg.requestId,
    };
    const result = msg.asManagedDisk
      ? await restoreAsManagedDisk(app, msg.diskId, { ...common, ...msg.asManagedDisk })
      : await restoreAsNewDisk(app, msg.diskId, common);
    app.log.info(`${label}: restored as disk ${result.diskId} (${result.size} bytes)`);
    return { status: "restored", result };
  } catch (err) {
    // The same input (or the same damaged point) fails the same way on every delivery: say why once.
    if (
      err instanceof InputError ||
      err instanceof IntegrityError ||
      (err as Error).name === "NotFoundError"
    ) {
      const reason = (err as Error).message;
      app.log.error(`${label} failed: ${reason}`);
      return { status: "refused", reason };
    }
    app.log.error(`${label} failed, the host will retry: ${messageOf(err)}`);
    throw err;
  }
}

/**
 * A restore message that failed on every delivery reached the poison queue. There is no run row
 * for a restore, so the failure is said where people look: an error in the log (in Azure, a trace
 * in Application Insights) naming the request, the disk and point, and how to start it again.
 * Whatever the failed deliveries made was already deleted by the restore itself.
 */
export function handleRestorePoison(app: App, queue: string, raw: unknown): void {
  let msg: RestoreRequestMessage;
  try {
    msg = decodeRestoreRequest(raw);
  } catch (err) {
    app.log.error(`a message on ${queue} is not a restore request (${messageOf(err)}); dropped`);
    return;
  }
  app.log.error(
    `restore ${msg.requestId} (disk ${msg.diskId} point ${msg.point} as ${msg.name ?? "default name"}) ` +
      `failed on every delivery and was moved to ${queue}; nothing was registered. ` +
      `Start it again with POST /api/disks/${msg.diskId}/restores once the cause (in the errors before this one) is fixed`,
  );
}
