/**
 * Registering and listing protected disks. `addDisk` checks everything it can before writing a
 * row, and names every problem at once: a malformed URL, a blob that is missing or not a page
 * blob, an account the identity cannot use (with the role it lacks), a backup blob that another
 * disk already uses, a retention count that is not a whole number in range. Nothing is written
 * unless every check passes. `setRetention` changes a registered disk's policy under the row's
 * ETag, so it never undoes a concurrent run's update of the same row.
 */
import { describeStorageError, errorInfo } from "../azure/errors";
import { withRetry } from "../azure/retry";
import {
  blobLocation,
  checkContainerName,
  parseAccountUrl,
  parseBlobUrl,
  type AccountLocation,
  type BlobLocation,
} from "../azure/urls";
import { retryOnConflict, type DiskRecord } from "../lineage/types";
import { checkRetainCount, DEFAULT_POLICY } from "../retention/policy";
import { retryPolicy, type EngineDeps } from "./run";

export class InputError extends Error {
  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? problems[0]
        : `${problems.length} problems:\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
    this.name = "InputError";
  }
}

export interface AddDiskInput {
  id: string;
  source: string;
  backupAccount: string;
  backupContainer?: string;
  backupBlob?: string;
  /** Retention (see lib/retention/policy.ts); each absent count is stored as its default. */
  retention?: RetentionInput;
}

/** Retention counts as a user gives them (CLI strings are accepted and checked). */
export interface RetentionInput {
  retainLast?: number | string;
  retainDaily?: number | string;
  retainWeekly?: number | string;
  retainMonthly?: number | string;
}

/** The CLI's names for the retention counts, used in every message about them. */
export const RETENTION_OPTIONS: Record<keyof RetentionInput, string> = {
  retainLast: "--keep-last",
  retainDaily: "--keep-daily",
  retainWeekly: "--keep-weekly",
  retainMonthly: "--keep-monthly",
};

/** Checks the given counts; returns them as numbers (only those given) and the problems found. */
export function parseRetention(input: RetentionInput | undefined): {
  values: Partial<Record<keyof RetentionInput, number>>;
  problems: string[];
} {
  const values: Partial<Record<keyof RetentionInput, number>> = {};
  const problems: string[] = [];
  for (const key of Object.keys(RETENTION_OPTIONS) as Array<keyof RetentionInput>) {
    const raw = input?.[key];
    if (raw === undefined) continue;
    const problem = checkRetainCount(RETENTION_OPTIONS[key], raw);
    if (problem) problems.push(problem);
    else values[key] = Number(raw);
  }
  return { values, problems };
}

export const DEFAULT_BACKUP_CONTAINER = "diskdelta";
const DISK_ID = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkDiskId(id: string): string | undefined {
  return DISK_ID.test(id)
    ? undefined
    : `disk id "${id}" is not valid: use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit`;
}

export async function addDisk(deps: EngineDeps, input: AddDiskInput): Promise<DiskRecord> {
  const problems: string[] = [];
  const idProblem = checkDiskId(input.id);
  if (idProblem) problems.push(idProblem);
  const retention = parseRetention(input.retention);
  problems.push(...retention.problems);
  let source: BlobLocation | undefined;
  let account: AccountLocation | undefined;
  let backup: BlobLocation | undefined;
  try {
    source = parseBlobUrl(input.source, "--source");
  } catch (err) {
    problems.push((err as Error).message);
  }
  try {
    account = parseAccountUrl(input.backupAccount, "--backup-account");
  } catch (err) {
    problems.push((err as Error).message);
  }
  const container = input.backupContainer ?? DEFAULT_BACKUP_CONTAINER;
  try {
    checkContainerName(container, "--backup-container");
    if (account) backup = blobLocation(account, container, input.backupBlob ?? input.id);
  } catch (err) {
    problems.push((err as Error).message);
  }
  if (
    source &&
    backup &&
    source.serviceUrl === backup.serviceUrl &&
    source.container === backup.container &&
    source.blob === backup.blob
  ) {
    problems.push(
      "the backup blob cannot be the disk itself: choose another --backup-account, --backup-container or --backup-blob",
    );
  }
  const policy = retryPolicy(deps.config);
  if (source) {
    try {
      const props = await withRetry(policy, () => deps.clients.pageBlob(source!).getProperties());
      if (props.blobType !== "PageBlob") {
        problems.push(
          `--source ${source.url} is a ${props.blobType ?? "non-page"} blob; diskdelta protects page blobs (VM disks) only`,
        );
      }
    } catch (err) {
      problems.push(describeStorageError(err, `--source ${source.url}`, "Storage Blob Data Contributor"));
    }
  }
  if (backup) {
    try {
      await withRetry(policy, () => deps.clients.container(backup!).createIfNotExists());
    } catch (err) {
      problems.push(
        describeStorageError(
          err,
          `--backup-account ${backup.serviceUrl} (container ${backup.container})`,
          "Storage Blob Data Contributor",
        ),
      );
    }
  }
  const existing = await deps.lineage.listDisks();
  if (existing.some((d) => d.id === input.id)) {
    problems.push(`disk ${input.id} is already registered; pick another id or see 'diskdelta disk list'`);
  }
  if (backup) {
    const clash = existing.find(
      (d) =>
        d.backupAccountUrl === backup!.serviceUrl &&
        d.backupContainer === backup!.container &&
        d.backupBlob === backup!.blob,
    );
    if (clash)
      problems.push(`disk ${clash.id} already backs up to ${backup.url}; give --backup-blob another name`);
  }
  if (problems.length) throw new InputError(problems);
  try {
    return await deps.lineage.addDisk({
      id: input.id,
      sourceUrl: source!.url,
      backupAccountUrl: backup!.serviceUrl,
      backupContainer: backup!.container,
      backupBlob: backup!.blob,
      createdAt: (deps.now ?? (() => new Date()))().toISOString(),
      // Stored explicitly, so a later change of the defaults never changes what an existing disk keeps.
      retainLast: retention.values.retainLast ?? DEFAULT_POLICY.last,
      retainDaily: retention.values.retainDaily ?? DEFAULT_POLICY.daily,
      retainWeekly: retention.values.retainWeekly ?? DEFAULT_POLICY.weekly,
      retainMonthly: retention.values.retainMonthly ?? DEFAULT_POLICY.monthly,
    });
  } catch (err) {
    throw new InputError([`could not register disk ${input.id}: ${errorInfo(err).message}`]);
  }
}

export async function requireDisk(deps: EngineDeps, id: string): Promise<DiskRecord> {
  const problem = checkDiskId(id);
  if (problem) throw new InputError([problem]);
  const disk = await deps.lineage.getDisk(id);
  if (!disk)
    throw new InputError([
      `disk ${id} is not registered; see 'diskdelta disk list' or add it with 'diskdelta disk add'`,
    ]);
  return disk;
}

/** How often `setRetention` re-reads and retries when a run updated the disk row meanwhile. */
const SET_RETENTION_ATTEMPTS = 5;

/** Changes the retention counts given in `input` (at least one); returns the updated disk. */
export async function setRetention(deps: EngineDeps, id: string, input: RetentionInput): Promise<DiskRecord> {
  const { values, problems } = parseRetention(input);
  if (problems.length === 0 && Object.keys(values).length === 0) {
    problems.push(`nothing to set: give at least one of ${Object.values(RETENTION_OPTIONS).join(", ")}`);
  }
  if (problems.length) throw new InputError(problems);
  // A run's heartbeat or seal may change the row between the read and the write: then read again.
  return retryOnConflict(SET_RETENTION_ATTEMPTS, async () => {
    const disk = await requireDisk(deps, id);
    return deps.lineage.updateDisk({ ...disk, ...values });
  });
}
