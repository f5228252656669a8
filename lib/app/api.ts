/**
 * The use cases behind the HTTP API, one function per route, independent of HTTP. Guarantees:
 * every input is validated before anything is read or written, and every problem is an InputError
 * on its field (bodies: unknown fields, wrong types and missing fields all at once; a key named
 * `__proto__`, `constructor` or `prototype` anywhere is refused); the HTTP adapter words fields as
 * body fields. An id that is well formed but names nothing is a NotFoundError; a disk with a live
 * run is a BusyError naming its holder; anything else is unexpected. Bodies take the shapes the
 * answers show (retention is `{keepLast, keepDaily, keepWeekly, keepMonthly}`), built from the
 * views the CLI prints too, with no credential in them.
 */
import { runProgress } from "../backup/fanout";
import { parseSchedule, type Schedule } from "../config/schedule";
import { InputError, NotFoundError, type Problem } from "../core/errors";
import {
  addDisk,
  checkDiskId,
  RETENTION_KEYS,
  setDisk,
  type DiskInput,
  type RetentionInput,
} from "../disks/register";
import { moveToManagedDisk } from "../disks/migrate";
import { timeOfId } from "../lineage/ids";
import { pointTimeIso, type DiskRecord, type RestorePointRecord, type RunRecord } from "../lineage/types";
import { requestBackup } from "./backups";
import type { App } from "./context";
import { requestRestore, type RestoreRequestInput } from "./restores";
import { intervalMsOf, isStale, nextDueAt } from "./timer";
import { diskJson, pointJson, runJson } from "./views";

/** Listing limits: enough for a portal page, small enough that one answer stays a few hundred KiB. */
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_RUNS_LIMIT = 20;
export const DEFAULT_POINTS_LIMIT = 50;

type FieldType = "string" | "boolean" | "integer" | "object";
interface FieldSpec {
  type: FieldType;
  required?: boolean;
  /** For objects: their own fields. */
  fields?: FieldSpecs;
}
type FieldSpecs = Record<string, FieldSpec>;

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

function describeType(t: FieldType): string {
  return t === "integer"
    ? "an integer"
    : t === "string"
      ? "a non-empty string"
      : t === "object"
        ? "an object"
        : "a boolean";
}

function checkFields(
  record: Record<string, unknown>,
  fields: FieldSpecs,
  prefix: string,
  problems: Problem[],
): void {
  const names = Object.keys(fields);
  for (const name of Object.keys(record)) {
    const path = `${prefix}${name}`;
    if (FORBIDDEN_KEYS.has(name))
      problems.push({
        field: path,
        message: "is not allowed (a key that would change an object's prototype)",
      });
    else if (!Object.hasOwn(fields, name))
      problems.push({
        field: path,
        message: `is not a field here; the fields are ${names.map((n) => `${prefix}${n}`).join(", ")}`,
      });
  }
  for (const [name, spec] of Object.entries(fields)) {
    const path = `${prefix}${name}`;
    const value = Object.hasOwn(record, name) ? record[name] : undefined;
    if (value === undefined || value === null) {
      if (spec.required) problems.push({ field: path, message: "is required" });
      continue;
    }
    const ok =
      spec.type === "integer"
        ? Number.isSafeInteger(value)
        : spec.type === "object"
          ? typeof value === "object" && !Array.isArray(value)
          : typeof value === spec.type && value !== "";
    if (!ok) {
      problems.push({
        field: path,
        message: `must be ${describeType(spec.type)}, got ${JSON.stringify(value)}`,
      });
      continue;
    }
    if (spec.type === "object" && spec.fields)
      checkFields(value as Record<string, unknown>, spec.fields, `${path}.`, problems);
  }
}

/**
 * Checks a parsed JSON body against its fields and names every problem at once: a body that is
 * not an object, unknown fields (a typo such as `intervalMinute` must not be silently ignored),
 * missing required fields and wrong types, at any depth.
 */
export function checkBody<T>(body: unknown, fields: FieldSpecs): T {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new InputError([
      `the request body must be a JSON object with the fields ${Object.keys(fields).join(", ")}`,
    ]);
  }
  const problems: Problem[] = [];
  checkFields(body as Record<string, unknown>, fields, "", problems);
  if (problems.length) throw new InputError(problems);
  return body as T;
}

export function checkId(id: string | undefined): string {
  const problem = checkDiskId(id ?? "");
  if (problem) throw InputError.field("diskId", problem);
  return id!;
}

/** A run id as `newId` makes it (r-… for a backup, rs-… for a restore); anything else cannot name a run. */
export function checkRunId(runId: string | undefined): string {
  let valid = false;
  try {
    valid = /^rs?-/.test(runId ?? "") && Boolean(timeOfId(runId!));
  } catch {
    valid = false;
  }
  if (!valid)
    throw InputError.field(
      "runId",
      `"${runId ?? ""}" is not a run id: run ids look like r-20261125T114100123Z-3fa9c1`,
    );
  return runId!;
}

/** `?limit=`: absent means the default; anything but an integer from 1 to MAX_LIST_LIMIT is refused, not clamped. */
export function checkLimit(raw: string | null | undefined, fallback: number): number {
  if (raw === null || raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1 || n > MAX_LIST_LIMIT) {
    throw InputError.field("limit", `${raw} is not an integer from 1 to ${MAX_LIST_LIMIT}`);
  }
  return n;
}

async function diskOr404(app: App, id: string): Promise<DiskRecord> {
  const disk = await app.lineage.getDisk(checkId(id));
  if (!disk) throw new NotFoundError(`disk ${id} is not registered; see GET /api/disks`);
  return disk;
}

export function diskLocation(id: string): string {
  return `/api/disks/${encodeURIComponent(id)}`;
}

export function runLocation(diskId: string, runId: string): string {
  return `${diskLocation(diskId)}/runs/${encodeURIComponent(runId)}`;
}

// ---------------------------------------------------------------------------------------------
// Disks

const RETENTION_FIELDS: FieldSpecs = Object.fromEntries(RETENTION_KEYS.map((k) => [k, { type: "integer" }]));

const REGISTER_FIELDS: FieldSpecs = {
  id: { type: "string", required: true },
  source: { type: "string", required: true },
  backupAccount: { type: "string", required: true },
  backupContainer: { type: "string" },
  backupBlob: { type: "string" },
  intervalMinutes: { type: "integer" },
  retention: { type: "object", fields: RETENTION_FIELDS },
};

/**
 * When the timer will next back the disk up and whether it is stale, by the timer's own arithmetic
 * (lib/app/timer.ts), so the API reports what the timer does.
 */
export function scheduleOf(
  disk: DiskRecord,
  newestPoint: RestorePointRecord | undefined,
  schedule: Schedule,
  at: Date,
): { intervalMinutes: number; nextDueAt: string; stale: boolean; newestPointAt?: string } {
  const newestPointAt = newestPoint ? pointTimeIso(newestPoint) : undefined;
  return {
    intervalMinutes: Math.round(intervalMsOf(disk, schedule) / 60_000),
    nextDueAt: nextDueAt(disk, schedule, at).toISOString(),
    stale: isStale(disk, newestPointAt, schedule, at),
    newestPointAt,
  };
}

async function diskView(app: App, disk: DiskRecord, schedule: Schedule, at: Date) {
  const [newest] = await app.lineage.listPoints(disk.id, 1);
  return { ...diskJson(disk), ...scheduleOf(disk, newest, schedule, at) };
}

export type DiskView = Awaited<ReturnType<typeof diskView>>;

/** Registers a disk (every check of `addDisk`). */
export async function registerDisk(app: App, body: unknown): Promise<DiskView> {
  const input = checkBody<DiskInput>(body, REGISTER_FIELDS);
  const disk = await addDisk(app, input);
  return diskView(app, disk, parseSchedule(app.config.schedule), app.now());
}

const CHANGE_FIELDS: FieldSpecs = {
  intervalMinutes: { type: "integer" },
  retention: { type: "object", fields: RETENTION_FIELDS },
  source: { type: "string" },
};

/**
 * Changes a disk's retention or interval (PATCH /api/disks/{id}); `source` (a managed disk id)
 * moves a disk registered as a page blob to the managed disk it was converted into.
 */
export async function changeDisk(app: App, id: string, body: unknown): Promise<DiskView> {
  await diskOr404(app, id);
  const input = checkBody<{ intervalMinutes?: number; retention?: RetentionInput; source?: string }>(
    body,
    CHANGE_FIELDS,
  );
  const { source, ...changes } = input;
  let disk = source !== undefined ? (await moveToManagedDisk(app, id, source)).disk : undefined;
  if (!disk || changes.intervalMinutes !== undefined || changes.retention !== undefined)
    disk = await setDisk(app, id, changes);
  return diskView(app, disk, parseSchedule(app.config.schedule), app.now());
}

export async function listDisks(app: App): Promise<{ disks: DiskView[] }> {
  const at = app.now();
  const schedule = parseSchedule(app.config.schedule);
  const disks = await app.lineage.listDisks();
  // One point read per disk; a deployment protects tens of disks, not thousands.
  return { disks: await Promise.all(disks.map((d) => diskView(app, d, schedule, at))) };
}

export async function getDisk(app: App, id: string): Promise<DiskView> {
  return diskView(app, await diskOr404(app, id), parseSchedule(app.config.schedule), app.now());
}

// ---------------------------------------------------------------------------------------------
// Backups and runs

const BACKUP_FIELDS: FieldSpecs = { force: { type: "boolean" } };

/** Claims a run and queues it; the caller polls `location`. BusyError when the disk has a live run. */
export async function startBackup(
  app: App,
  id: string,
  body: unknown,
): Promise<{ diskId: string; runId: string; state: RunRecord["state"]; location: string }> {
  const input = body === undefined ? {} : checkBody<{ force?: boolean }>(body, BACKUP_FIELDS);
  await diskOr404(app, id);
  const run = await requestBackup(app, id, "http", { force: input.force });
  return { diskId: id, runId: run.id, state: run.state, location: runLocation(id, run.id) };
}

export async function listRuns(app: App, id: string, limit: string | null | undefined) {
  const n = checkLimit(limit, DEFAULT_RUNS_LIMIT);
  await diskOr404(app, id);
  const runs = await app.lineage.listRuns(id, n);
  return { runs: runs.map((r) => ({ ...runJson(r), location: runLocation(id, r.id) })) };
}

/**
 * A run with its progress as it truly is: a run copied inline counts at each checkpoint; a
 * fanned-out run's batches are counted in the lineage as they complete, and merged here.
 */
export async function getRun(app: App, id: string, runId: string) {
  checkId(id);
  checkRunId(runId);
  await diskOr404(app, id);
  const run = await app.lineage.getRun(id, runId);
  if (!run)
    throw new NotFoundError(`run ${runId} of disk ${id} does not exist; see GET ${diskLocation(id)}/runs`);
  return { ...runJson(run), progress: await runProgress(app, run), location: runLocation(id, run.id) };
}

export async function listPoints(app: App, id: string, limit: string | null | undefined) {
  const n = checkLimit(limit, DEFAULT_POINTS_LIMIT);
  await diskOr404(app, id);
  return { points: (await app.lineage.listPoints(id, n)).map(pointJson) };
}

// ---------------------------------------------------------------------------------------------
// Restores

const RESTORE_FIELDS: FieldSpecs = {
  point: { type: "string" },
  name: { type: "string" },
  overwrite: { type: "boolean" },
  allowDamaged: { type: "boolean" },
  asManagedDisk: { type: "boolean" },
  resourceGroup: { type: "string" },
  sku: { type: "string" },
  zone: { type: "string" },
  location: { type: "string" },
};

/**
 * Checks and queues a restore. `location` is the new disk, which answers 404 until the restore has
 * registered it (registering is a restore's last step, so once it answers the disk is whole).
 */
export async function startRestore(app: App, id: string, body: unknown) {
  const input = body === undefined ? {} : checkBody<RestoreRequestInput>(body, RESTORE_FIELDS);
  await diskOr404(app, id);
  const { requestId, message, point } = await requestRestore(app, id, input);
  const name = message.name!;
  return { restoreId: requestId, requestId, diskId: id, point: point.id, name, location: diskLocation(name) };
}
