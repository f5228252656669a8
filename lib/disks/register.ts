/**
 * Registering protected disks and changing them. `addDisk` checks everything it can before writing
 * a row, and names every problem at once, each on its field: an invalid id; a source that is not a
 * page blob URL or managed disk id, is missing, is of the wrong kind, or that the identity cannot
 * use (with the role it lacks); a source another disk already protects; a backup account that is
 * not a storage endpoint; a container or blob name Azure would not take; a backup blob another disk
 * uses, or that is a disk's source; a retention count or an interval out of range. Nothing is
 * written unless every check passes. `setDisk` changes a registered disk (retention, interval)
 * under the row's ETag, so it never undoes a concurrent run's update of the same row.
 */
import { InputError, NotFoundError, type Problem } from "../core/errors";
import { retryOnConflict } from "../core/retry";
import type { Deps } from "../deps";
import { backupLocation } from "../lineage/locations";
import type { DiskRecord } from "../lineage/types";
import { checkRetainCount, DEFAULT_POLICY, MAX_RETAIN } from "../retention/policy";
import { describeStorageError } from "../storage/errors";
import {
  blobLocation,
  checkBlobName,
  checkContainerName,
  parseAccountUrl,
  type BlobLocation,
} from "../storage/urls";

export const DEFAULT_BACKUP_CONTAINER = "diskdelta";
/** A year: a longer interval is a typo, not a backup policy. */
export const MAX_INTERVAL_MINUTES = 366 * 24 * 60;

/** Retention counts as a user gives them; CLI strings are accepted and checked. */
export interface RetentionInput {
  keepLast?: number | string;
  keepDaily?: number | string;
  keepWeekly?: number | string;
  keepMonthly?: number | string;
}

export const RETENTION_KEYS = ["keepLast", "keepDaily", "keepWeekly", "keepMonthly"] as const;
type RetentionKey = (typeof RETENTION_KEYS)[number];

/** The record columns behind each count. */
const RETENTION_COLUMNS: Record<
  RetentionKey,
  "retainLast" | "retainDaily" | "retainWeekly" | "retainMonthly"
> = {
  keepLast: "retainLast",
  keepDaily: "retainDaily",
  keepWeekly: "retainWeekly",
  keepMonthly: "retainMonthly",
};

export interface DiskInput {
  id: string;
  source: string;
  backupAccount: string;
  backupContainer?: string;
  backupBlob?: string;
  intervalMinutes?: number | string;
  retention?: RetentionInput;
}

const DISK_ID = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkDiskId(id: string): string | undefined {
  return DISK_ID.test(id)
    ? undefined
    : `disk id "${id}" is not valid: use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit`;
}

/** The counts given, as record columns, and their problems on fields `retention.<key>`. */
export function parseRetention(input: RetentionInput | undefined): {
  values: Partial<DiskRecord>;
  problems: Problem[];
} {
  const values: Partial<DiskRecord> = {};
  const problems: Problem[] = [];
  for (const key of Object.keys(input ?? {})) {
    if (!(RETENTION_KEYS as readonly string[]).includes(key)) {
      problems.push({
        field: `retention.${key}`,
        message: `is not a retention count; the counts are ${RETENTION_KEYS.join(", ")}`,
      });
    }
  }
  for (const key of RETENTION_KEYS) {
    const raw = input?.[key];
    if (raw === undefined) continue;
    if (checkRetainCount("", raw))
      problems.push({
        field: `retention.${key}`,
        message: `${String(raw)} is not a whole number from 0 to ${MAX_RETAIN}`,
      });
    else values[RETENTION_COLUMNS[key]] = Number(raw);
  }
  return { values, problems };
}

export function parseInterval(raw: number | string | undefined): { value?: number; problem?: Problem } {
  if (raw === undefined) return {};
  const n = typeof raw === "string" && /^\d+$/.test(raw.trim()) ? Number(raw) : raw;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 1 || n > MAX_INTERVAL_MINUTES) {
    return {
      problem: {
        field: "intervalMinutes",
        message: `${String(raw)} is not a whole number of minutes from 1 to ${MAX_INTERVAL_MINUTES} (a year)`,
      },
    };
  }
  return { value: n };
}

function sameBlob(a: BlobLocation, b: { serviceUrl: string; container: string; blob: string }): boolean {
  return a.serviceUrl === b.serviceUrl && a.container === b.container && a.blob === b.blob;
}

export async function addDisk(deps: Deps, input: DiskInput): Promise<DiskRecord> {
  const problems: Problem[] = [];
  const idProblem = checkDiskId(input.id);
  if (idProblem) problems.push({ field: "id", message: idProblem });
  const retention = parseRetention(input.retention);
  problems.push(...retention.problems);
  const interval = parseInterval(input.intervalMinutes);
  if (interval.problem) problems.push(interval.problem);

  let backup: BlobLocation | undefined;
  try {
    const account = parseAccountUrl(input.backupAccount, "backupAccount", deps.hosts);
    const container = input.backupContainer ?? DEFAULT_BACKUP_CONTAINER;
    const containerProblem = checkContainerName(container);
    if (containerProblem) problems.push({ field: "backupContainer", message: containerProblem });
    const blob = input.backupBlob ?? input.id;
    const blobProblem = input.backupBlob !== undefined ? checkBlobName(blob) : undefined;
    if (blobProblem) problems.push({ field: "backupBlob", message: blobProblem });
    if (!containerProblem && !blobProblem && !idProblem) backup = blobLocation(account, container, blob);
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    problems.push(...err.problems);
  }

  const source = await deps.sources.inspect(input.source, "source").catch((err: unknown) => {
    if (!(err instanceof InputError)) throw err;
    problems.push(...err.problems);
    return undefined;
  });

  if (backup) {
    try {
      await deps.storage.ensureContainer(backup);
    } catch (err) {
      problems.push({
        field: "backupAccount",
        message: describeStorageError(
          err,
          `${backup.serviceUrl} (container ${backup.container})`,
          "Storage Blob Data Contributor",
        ),
      });
    }
  }
  const existing = await deps.lineage.listDisks();
  if (existing.some((d) => d.id === input.id)) {
    problems.push({
      field: "id",
      message: `disk ${input.id} is already registered; pick another id or see the disk list`,
    });
  }
  if (source) {
    const twin = existing.find(
      (d) =>
        d.sourceUrl === source.sourceUrl || (source.sourceDiskId && d.sourceDiskId === source.sourceDiskId),
    );
    if (twin)
      problems.push({
        field: "source",
        message: `${source.sourceUrl} is already protected by disk ${twin.id}; two disks must not back up one source`,
      });
    const isBackup = existing.find((d) => backupUrlOf(d) === source.sourceUrl);
    if (isBackup)
      problems.push({
        field: "source",
        message: `${source.sourceUrl} is the backup blob of disk ${isBackup.id}, not a disk`,
      });
  }
  if (backup) {
    if (source && source.sourceUrl === backup.url) {
      problems.push({
        field: "backupBlob",
        message:
          "the backup blob cannot be the disk itself: choose another {{backupAccount}}, {{backupContainer}} or {{backupBlob}}",
      });
    }
    const clash = existing.find((d) =>
      sameBlob(backup!, { serviceUrl: d.backupAccountUrl, container: d.backupContainer, blob: d.backupBlob }),
    );
    if (clash)
      problems.push({
        field: "backupBlob",
        message: `disk ${clash.id} already backs up to ${backup.url}; give {{backupBlob}} another name`,
      });
    const sourceOfOther = existing.find((d) => d.sourceUrl === backup!.url);
    if (sourceOfOther)
      problems.push({
        field: "backupBlob",
        message: `${backup.url} is the source of disk ${sourceOfOther.id}; a backup must never write over a disk`,
      });
  }
  if (problems.length) throw new InputError(problems);
  try {
    return await deps.lineage.addDisk({
      id: input.id,
      sourceUrl: source!.sourceUrl,
      sourceDiskId: source!.sourceDiskId,
      backupAccountUrl: backup!.serviceUrl,
      backupContainer: backup!.container,
      backupBlob: backup!.blob,
      createdAt: deps.now().toISOString(),
      intervalMinutes: interval.value,
      // Stored explicitly, so a later change of the defaults never changes what an existing disk keeps.
      retainLast: retention.values.retainLast ?? DEFAULT_POLICY.last,
      retainDaily: retention.values.retainDaily ?? DEFAULT_POLICY.daily,
      retainWeekly: retention.values.retainWeekly ?? DEFAULT_POLICY.weekly,
      retainMonthly: retention.values.retainMonthly ?? DEFAULT_POLICY.monthly,
    });
  } catch (err) {
    throw new InputError([
      { field: "id", message: `could not register disk ${input.id}: ${(err as Error).message}` },
    ]);
  }
}

function backupUrlOf(disk: DiskRecord): string | undefined {
  try {
    return backupLocation(disk).url;
  } catch {
    return undefined;
  }
}

/** The registered disk `id`; an InputError for a malformed id, a NotFoundError for an unknown one. */
export async function requireDisk(deps: Pick<Deps, "lineage">, id: string): Promise<DiskRecord> {
  const problem = checkDiskId(id);
  if (problem) throw InputError.field("diskId", problem);
  const disk = await deps.lineage.getDisk(id);
  if (!disk) throw new NotFoundError(`disk ${id} is not registered`, "diskId");
  return disk;
}

export interface DiskChanges {
  retention?: RetentionInput;
  /** Minutes, or "default" to go back to the schedule's interval. */
  intervalMinutes?: number | string;
}

/** How often `setDisk` re-reads and retries when a run updated the disk row meanwhile. */
const SET_ATTEMPTS = 5;

/** Changes what is given in `changes` (at least one); returns the updated disk. */
export async function setDisk(deps: Deps, id: string, changes: DiskChanges): Promise<DiskRecord> {
  const { values, problems } = parseRetention(changes.retention);
  const patch: Partial<DiskRecord> = { ...values };
  let clearInterval = false;
  if (changes.intervalMinutes === "default") clearInterval = true;
  else {
    const interval = parseInterval(changes.intervalMinutes);
    if (interval.problem) problems.push(interval.problem);
    if (interval.value !== undefined) patch.intervalMinutes = interval.value;
  }
  if (problems.length === 0 && Object.keys(patch).length === 0 && !clearInterval) {
    problems.push({
      message: `nothing to change: give at least one of {{retention.keepLast}}, {{retention.keepDaily}}, {{retention.keepWeekly}}, {{retention.keepMonthly}}, {{intervalMinutes}}`,
    });
  }
  if (problems.length) throw new InputError(problems);
  // A run's heartbeat or seal may change the row between the read and the write: then read again.
  return retryOnConflict(SET_ATTEMPTS, async () => {
    const disk = await requireDisk(deps, id);
    return deps.lineage.updateDisk({
      ...disk,
      ...patch,
      ...(clearInterval ? { intervalMinutes: undefined } : {}),
    });
  });
}
