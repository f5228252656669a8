/**
 * The use cases behind the HTTP API, one function per route, independent of HTTP. Guarantees: every
 * input is validated before anything is read or written, and every problem is an InputError that
 * names the field in the API's own words (bodies: unknown fields, wrong types and missing fields
 * all at once); an id that is well formed but names nothing is a NotFoundError; a disk with a live
 * run is a BusyError naming it; anything else is unexpected. Results are plain JSON built from the
 * views the CLI prints too, with no credential in them.
 */
import { addDisk, checkDiskId, InputError, type AddDiskInput } from "../backup/disks";
import { timeOfId } from "../lineage/ids";
import { NotFoundError, type DiskRecord, type RestorePointRecord, type RunRecord } from "../lineage/types";
import { pointTimeIso } from "../restore/points";
import { requestBackup } from "./backups";
import { requestRestore, type RestoreRequestInput } from "./restores";
import { parseSchedule, type Schedule } from "./schedule";
import { intervalMsOf, isStale, nextDueAt } from "./timer";
import type { App } from "./runtime";
import { diskJson, pointJson, runJson } from "./views";

/** A year: a longer interval is a typo, not a backup policy. */
const MAX_INTERVAL_MINUTES = 366 * 24 * 60;
/** Listing limits: enough for a portal page, small enough that one answer stays a few hundred KiB. */
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_RUNS_LIMIT = 20;
export const DEFAULT_POINTS_LIMIT = 50;

type FieldType = "string" | "boolean" | "integer";
type FieldSpecs = Record<string, { type: FieldType; required?: boolean }>;

/**
 * Checks a parsed JSON body against its fields and names every problem at once: a body that is
 * not an object, unknown fields (a typo such as `intervalMinute` must not be silently ignored),
 * missing required fields and wrong types.
 */
export function checkBody<T>(body: unknown, fields: FieldSpecs): T {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new InputError([
      `the request body must be a JSON object with the fields ${Object.keys(fields).join(", ")}`,
    ]);
  }
  const problems: string[] = [];
  const record = body as Record<string, unknown>;
  for (const name of Object.keys(record)) {
    if (!(name in fields)) {
      problems.push(`unknown field "${name}"; the fields are ${Object.keys(fields).join(", ")}`);
    }
  }
  for (const [name, spec] of Object.entries(fields)) {
    const value = record[name];
    if (value === undefined || value === null) {
      if (spec.required) problems.push(`field "${name}" is required`);
      continue;
    }
    const ok =
      spec.type === "integer" ? Number.isSafeInteger(value) : typeof value === spec.type && value !== "";
    if (!ok) {
      problems.push(
        `field "${name}" must be ${spec.type === "integer" ? "an integer" : spec.type === "string" ? "a non-empty string" : "a boolean"}, got ${JSON.stringify(value)}`,
      );
    }
  }
  if (problems.length) throw new InputError(problems);
  return record as T;
}

/**
 * The engine's messages name CLI options (`--source`); over HTTP the same problem must name the
 * body field, so the caller can tell which one to fix.
 */
const CLI_TO_FIELD: Array<[RegExp, string]> = [
  [/--source\b/g, "source"],
  [/--backup-account\b/g, "backupAccount"],
  [/--backup-container\b/g, "backupContainer"],
  [/--backup-blob\b/g, "backupBlob"],
  [/--point\b/g, "point"],
  [/--name\b/g, "name"],
  [/--overwrite\b/g, "overwrite"],
  [/--keep-last\b/g, "retainLast"],
  [/--keep-daily\b/g, "retainDaily"],
  [/--keep-weekly\b/g, "retainWeekly"],
  [/--keep-monthly\b/g, "retainMonthly"],
];

export function inApiWords(err: unknown): unknown {
  if (!(err instanceof InputError)) return err;
  const problems = err.problems.map((p) =>
    CLI_TO_FIELD.reduce((text, [cli, field]) => text.replace(cli, field), p),
  );
  return new InputError(problems);
}

export function checkId(id: string | undefined, what = "disk id"): string {
  const problem = checkDiskId(id ?? "");
  if (problem) throw new InputError([what === "disk id" ? problem : `${what}: ${problem}`]);
  return id!;
}

/** A run id as `newId` makes it (r-<time>-<hex>); anything else cannot name a run and is refused before a lookup. */
export function checkRunId(runId: string | undefined): string {
  let valid = false;
  try {
    valid = Boolean(runId?.startsWith("r-")) && Boolean(timeOfId(runId!));
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new InputError([
      `run id "${runId ?? ""}" is not valid: run ids look like r-20261125T114100123Z-3fa9c1`,
    ]);
  }
  return runId!;
}

/** `?limit=`: absent means the default; anything but an integer from 1 to MAX_LIST_LIMIT is refused, not clamped. */
export function checkLimit(raw: string | null | undefined, fallback: number): number {
  if (raw === null || raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1 || n > MAX_LIST_LIMIT) {
    throw new InputError([`query parameter limit=${raw} is not an integer from 1 to ${MAX_LIST_LIMIT}`]);
  }
  return n;
}

async function diskOr404(app: App, id: string): Promise<DiskRecord> {
  const disk = await app.lineage.getDisk(checkId(id));
  if (!disk) throw new NotFoundError(`disk ${id} is not registered; see GET /api/disks`);
  return disk;
}

function now(app: App): Date {
  return (app.now ?? (() => new Date()))();
}

export function diskLocation(id: string): string {
  return `/api/disks/${encodeURIComponent(id)}`;
}

export function runLocation(diskId: string, runId: string): string {
  return `${diskLocation(diskId)}/runs/${encodeURIComponent(runId)}`;
}

// ---------------------------------------------------------------------------------------------
// Disks

export interface RegisterDiskBody extends AddDiskInput {
  intervalMinutes?: number;
  retainLast?: number;
  retainDaily?: number;
  retainWeekly?: number;
  retainMonthly?: number;
}

const REGISTER_FIELDS: FieldSpecs = {
  id: { type: "string", required: true },
  source: { type: "string", required: true },
  backupAccount: { type: "string", required: true },
  backupContainer: { type: "string" },
  backupBlob: { type: "string" },
  intervalMinutes: { type: "integer" },
  // Retention counts, as `diskdelta disk add --keep-*` takes them (infra registers disks with them).
  retainLast: { type: "integer" },
  retainDaily: { type: "integer" },
  retainWeekly: { type: "integer" },
  retainMonthly: { type: "integer" },
};

/**
 * When the timer will next back the disk up and whether it is stale, by the timer's own arithmetic
 * (lib/app/timer.ts), so the API reports what the timer does: the next schedule tick at which the
 * disk is due (a disk's own interval overrides the schedule's), and stale when its newest restore
 * point (or, without one, its registration) is older than two intervals.
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

/** Registers a disk (every check of `addDisk`), then records its own interval if it has one. */
export async function registerDisk(app: App, body: unknown): Promise<DiskView> {
  const input = checkBody<RegisterDiskBody>(body, REGISTER_FIELDS);
  const interval = input.intervalMinutes;
  if (interval !== undefined && (interval < 1 || interval > MAX_INTERVAL_MINUTES)) {
    throw new InputError([
      `field "intervalMinutes" must be from 1 to ${MAX_INTERVAL_MINUTES} (a year), got ${interval}`,
    ]);
  }
  let disk: DiskRecord;
  try {
    disk = await addDisk(app, {
      id: input.id,
      source: input.source,
      backupAccount: input.backupAccount,
      backupContainer: input.backupContainer,
      backupBlob: input.backupBlob,
      retention: {
        retainLast: input.retainLast,
        retainDaily: input.retainDaily,
        retainWeekly: input.retainWeekly,
        retainMonthly: input.retainMonthly,
      },
    });
  } catch (err) {
    throw inApiWords(err);
  }
  // addDisk knows no interval; the row is fresh, so its ETag guard only fails if another writer
  // touched it within milliseconds, and then the default interval applies and is what is shown.
  if (interval !== undefined) disk = await app.lineage.updateDisk({ ...disk, intervalMinutes: interval });
  return diskView(app, disk, parseSchedule(app.config.schedule), now(app));
}

export async function listDisks(app: App): Promise<{ disks: DiskView[] }> {
  const at = now(app);
  const schedule = parseSchedule(app.config.schedule);
  const disks = await app.lineage.listDisks();
  // One point read per disk; a deployment protects tens of disks, not thousands.
  return { disks: await Promise.all(disks.map((d) => diskView(app, d, schedule, at))) };
}

export async function getDisk(app: App, id: string): Promise<DiskView> {
  return diskView(app, await diskOr404(app, id), parseSchedule(app.config.schedule), now(app));
}

// ---------------------------------------------------------------------------------------------
// Backups and runs

const NO_FIELDS: FieldSpecs = {};

/** Claims a run and queues it; the caller polls `location`. BusyError when the disk has a live run. */
export async function startBackup(
  app: App,
  id: string,
  body: unknown,
): Promise<{ diskId: string; runId: string; state: RunRecord["state"]; location: string }> {
  // An empty body is the usual request; a body with fields is a client expecting options we lack.
  if (body !== undefined) checkBody(body, NO_FIELDS);
  await diskOr404(app, id);
  const run = await requestBackup(app, id, "http");
  return { diskId: id, runId: run.id, state: run.state, location: runLocation(id, run.id) };
}

export async function listRuns(app: App, id: string, limit: string | null | undefined) {
  const n = checkLimit(limit, DEFAULT_RUNS_LIMIT);
  await diskOr404(app, id);
  const runs = await app.lineage.listRuns(id, n);
  return { runs: runs.map((r) => ({ ...runJson(r), location: runLocation(id, r.id) })) };
}

/**
 * Progress as the run record counts it: chunk batches update it as they complete, and a run
 * copied inline updates it at each checkpoint. `position` is the disk offset below which the run
 * has applied (inline) or planned (fan-out) its changes.
 */
export function progressOf(run: RunRecord) {
  return {
    chunksDone: run.chunksDone,
    chunksTotal: run.chunksTotal,
    bytesPlanned: run.bytesPlanned,
    bytesCopied: run.bytesCopied,
    bytesCleared: run.bytesCleared,
    position: run.checkpoint,
    size: run.sourceSize,
    mode: run.mode,
  };
}

export async function getRun(app: App, id: string, runId: string) {
  checkId(id);
  checkRunId(runId);
  await diskOr404(app, id);
  const run = await app.lineage.getRun(id, runId);
  if (!run)
    throw new NotFoundError(`run ${runId} of disk ${id} does not exist; see GET ${diskLocation(id)}/runs`);
  return { ...runJson(run), progress: progressOf(run), location: runLocation(id, run.id) };
}

export async function listPoints(app: App, id: string, limit: string | null | undefined) {
  const n = checkLimit(limit, DEFAULT_POINTS_LIMIT);
  await diskOr404(app, id);
  return { points: (await app.lineage.listPoints(id, n)).map(pointJson) };
}

// ---------------------------------------------------------------------------------------------
// Restores

const RESTORE_FIELDS: FieldSpecs = {
  point: { type: "string", required: true },
  name: { type: "string" },
  overwrite: { type: "boolean" },
};

/**
 * Checks and queues a restore. `location` is the new disk, which answers 404 until the restore has
 * registered it (registering is a restore's last step, so once it answers the disk is whole).
 */
export async function startRestore(app: App, id: string, body: unknown) {
  const input = checkBody<RestoreRequestInput>(body, RESTORE_FIELDS);
  try {
    const { requestId, message, point } = await requestRestore(app, id, input);
    const name = message.name!;
    return { requestId, diskId: id, point: point.id, name, location: diskLocation(name) };
  } catch (err) {
    throw inApiWords(err);
  }
}
