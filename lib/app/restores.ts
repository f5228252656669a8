/**
 * Restores as the app runs them: a request is checked and resolved at once (the disk exists, the
 * point spec names one restore point, the new disk's name is valid and free), then queued, because
 * a restore copies a whole disk and outlives an HTTP answer; the restore-requests worker runs it.
 * Guarantees: the message carries the resolved point id and name, so a backup sealed meanwhile
 * does not change what `latest` restores; delivery is at-least-once, and a message whose restore
 * already registered its disk is acknowledged without copying again; bad input is refused with a
 * 4xx before anything is queued; a restore that can never succeed is logged with its reason and
 * not retried, while a transient failure is rethrown for the host to retry. Problems are worded
 * as the engine words them (CLI options); the HTTP layer renames them to body fields.
 */
import { errorInfo } from "../azure/errors";
import { checkDiskId, InputError } from "../backup/disks";
import { newId, timeOfId } from "../lineage/ids";
import { ConflictError, NotFoundError, type RestorePointRecord } from "../lineage/types";
import { selectPoint } from "../restore/points";
import { defaultRestoreName, restoreAsNewDisk, type RestoreResult } from "../restore/restore";
import { decodeRestoreRequest, QUEUES, type RestoreRequestMessage } from "./queues";
import type { App } from "./runtime";

export interface RestoreRequestInput {
  /** A restore point id, `latest`, or an ISO time (see selectPoint). */
  point: string;
  name?: string;
  overwrite?: boolean;
}

export interface RestoreRequested {
  requestId: string;
  message: RestoreRequestMessage;
  point: RestorePointRecord;
}

/** What a point spec is meant to be; a well-formed spec that finds nothing is a 404, a malformed one a 400. */
function specIsWellFormed(spec: string): boolean {
  const s = spec.trim();
  if (s === "latest" || /^p-\d{8}T\d{9}Z-[0-9a-f]{6}$/.test(s)) return true;
  return /^\d{4}-\d{2}-\d{2}/.test(s) && Number.isFinite(Date.parse(s));
}

async function resolvePoint(app: App, diskId: string, spec: string): Promise<RestorePointRecord> {
  try {
    return await selectPoint(app.lineage, diskId, spec);
  } catch (err) {
    if (err instanceof InputError && specIsWellFormed(spec)) throw new NotFoundError(err.message);
    throw err;
  }
}

export async function requestRestore(
  app: App,
  diskId: string,
  input: RestoreRequestInput,
): Promise<RestoreRequested> {
  const idProblem = checkDiskId(diskId);
  if (idProblem) throw new InputError([idProblem]);
  if (!(await app.lineage.getDisk(diskId))) {
    throw new NotFoundError(`disk ${diskId} is not registered; see GET /api/disks`);
  }
  const point = await resolvePoint(app, diskId, input.point);
  const name = input.name ?? defaultRestoreName(diskId, point);
  const nameProblem = checkDiskId(name);
  if (nameProblem) {
    throw new InputError([
      input.name !== undefined
        ? `--name: ${nameProblem}`
        : `${nameProblem}; choose a shorter one with --name`,
    ]);
  }
  // The worker checks again (a disk may be registered meanwhile); this answers the common case now.
  if (await app.lineage.getDisk(name)) {
    throw new ConflictError(`disk ${name} is already registered; choose another "name"`);
  }
  const requestId = newId((app.now ?? (() => new Date()))(), "rq");
  const message: RestoreRequestMessage = {
    diskId,
    point: point.id,
    name,
    overwrite: input.overwrite ? true : undefined,
    requestId,
  };
  await app.queues.send(QUEUES.restoreRequests, message);
  app.log.info(`queued restore ${requestId}: disk ${diskId} point ${point.id} as disk ${name}`);
  return { requestId, message, point };
}

export type RestoreOutcome =
  | { status: "restored"; result: RestoreResult }
  | { status: "already-restored"; diskId: string }
  | { status: "refused"; reason: string };

/**
 * Runs one queued restore. A redelivered message whose restore already registered its disk is
 * done: the disk was registered after the request (its createdAt is not older than the request
 * id's time) and backs up to the blob this restore promotes (the name, beside the point's backup
 * blob). A disk of that name registered otherwise is not this restore's, and the restore is refused.
 */
export async function handleRestoreRequest(app: App, msg: RestoreRequestMessage): Promise<RestoreOutcome> {
  const label = `restore ${msg.requestId} (disk ${msg.diskId} point ${msg.point} as ${msg.name ?? "default name"})`;
  if (msg.name) {
    const target = await app.lineage.getDisk(msg.name);
    const source = await app.lineage.getDisk(msg.diskId);
    if (target) {
      const requestedAt = timeOfId(msg.requestId).getTime();
      const ours =
        source !== undefined &&
        Date.parse(target.createdAt) >= requestedAt &&
        target.backupAccountUrl === source.backupAccountUrl &&
        target.backupContainer === source.backupContainer &&
        target.backupBlob === msg.name;
      if (ours) {
        app.log.info(`${label}: already done, disk ${msg.name} is registered`);
        return { status: "already-restored", diskId: msg.name };
      }
    }
  }
  try {
    const result = await restoreAsNewDisk(app, msg.diskId, {
      point: msg.point,
      name: msg.name,
      overwrite: msg.overwrite,
    });
    app.log.info(`${label}: restored as disk ${result.diskId} (${result.size} bytes)`);
    return { status: "restored", result };
  } catch (err) {
    // The same input fails the same way on every delivery: say why once instead of five times.
    if (err instanceof InputError) {
      const reason = err.message;
      app.log.error(`${label} failed: ${reason}`);
      return { status: "refused", reason };
    }
    app.log.error(`${label} failed, the host will retry: ${errorInfo(err).message}`);
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
    app.log.error(`a message on ${queue} is not a restore request (${errorInfo(err).message}); dropped`);
    return;
  }
  app.log.error(
    `restore ${msg.requestId} (disk ${msg.diskId} point ${msg.point} as ${msg.name ?? "default name"}) ` +
      `failed on every delivery and was moved to ${queue}; nothing was registered. ` +
      `Start it again with POST /api/disks/${msg.diskId}/restores once the cause (in the errors before this one) is fixed`,
  );
}
