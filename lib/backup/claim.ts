/**
 * One active run per disk. The disk row's `activeRunId`, changed only under its ETag, is the lock;
 * the run's `leaseUntil`, renewed by heartbeats, says whether its holder is alive. Guarantees:
 * two starts racing for one disk produce exactly one run, the other gets BusyError naming it; a
 * run whose holder died (lease lapsed, or its process on this host is gone) is taken over and
 * resumed, never restarted from scratch; a run that succeeded but whose bookkeeping was cut short
 * has its base advanced before anything new starts.
 */
import os from "node:os";
import { BusyError, ConflictError, NotFoundError } from "../core/errors";
import { newId } from "../lineage/ids";
import {
  TERMINAL_STATES,
  type DiskRecord,
  type Lineage,
  type RunRecord,
  type RunTrigger,
} from "../lineage/types";

/** What kind of process holds a run, for the busy message: set once by each entry point. */
export type OwnerRole = "cli" | "host" | "worker" | "function";
let processRole: OwnerRole = "cli";

export function setOwnerRole(role: OwnerRole): void {
  processRole = role;
}

/** Owner of a run that is claimed but not yet picked up by a backup-requests worker. */
export const QUEUED_OWNER = "queued:0";

/** This process as a run owner: `<role>@<host>:<pid>`. */
export function ownerId(): string {
  return `${processRole}@${os.hostname()}:${process.pid}`;
}

function parseOwner(owner: string): { role?: string; host: string; pid: number } {
  const at = owner.indexOf("@");
  const rest = at >= 0 ? owner.slice(at + 1) : owner;
  const colon = rest.lastIndexOf(":");
  return {
    role: at >= 0 ? owner.slice(0, at) : undefined,
    host: rest.slice(0, colon),
    pid: Number(rest.slice(colon + 1)),
  };
}

const ROLE_WORDS: Record<string, string> = {
  cli: "a diskdelta command",
  host: "the local Functions host (npm start)",
  worker: "a diskdelta worker",
  function: "a Functions instance",
};

/** Who holds a run, in words: "a diskdelta command (pid 4242 on host1)", "the backup queue (waiting for a worker)". */
export function holderWords(owner: string): string {
  if (owner === QUEUED_OWNER)
    return "the backup queue (waiting for a worker to pick it up; the timer or the HTTP API started it)";
  if (owner === "restore") return "a restore";
  const { role, host, pid } = parseOwner(owner);
  const who = ROLE_WORDS[role ?? ""] ?? "another process";
  const here = host === os.hostname() ? "this host" : host;
  return Number.isInteger(pid) && pid > 0 ? `${who} (pid ${pid} on ${here})` : who;
}

/** True when `owner` is a process on this host that no longer exists. */
function ownerIsDeadHere(owner: string): boolean {
  const { host, pid } = parseOwner(owner);
  if (host !== os.hostname() || !Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

export function leaseHolds(run: RunRecord, now: Date): boolean {
  return Date.parse(run.leaseUntil) > now.getTime() && !ownerIsDeadHere(run.owner);
}

export interface Claim {
  disk: DiskRecord;
  run: RunRecord;
  resumed: boolean;
}

export interface ClaimContext {
  lineage: Lineage;
  leaseSeconds: number;
  owner: string;
  now: () => Date;
  log: (message: string) => void;
}

/** When a lease taken at `now` for `seconds` runs out, as stored on a run row. */
export function leaseFrom(now: Date, seconds: number): string {
  return new Date(now.getTime() + seconds * 1000).toISOString();
}

/** Applies what a succeeded run's seal decided to the disk row, if that was cut short. */
export function advancedDisk(disk: DiskRecord, run: RunRecord): DiskRecord {
  return {
    ...disk,
    baseSnapshot: run.sourceSnapshot,
    baseSize: run.sourceSize,
    basePoint: run.restorePoint,
    baseFence: run.fence,
    activeRunId: disk.activeRunId === run.id ? undefined : disk.activeRunId,
    lastRunId: run.id,
    lastSuccessAt: run.finishedAt ?? run.updatedAt,
  };
}

/** The counters of a run that has copied nothing yet. */
export const NO_PROGRESS = {
  rangesWritten: 0,
  rangesCleared: 0,
  chunksTotal: 0,
  chunksDone: 0,
  bytesPlanned: 0,
  bytesCopied: 0,
  bytesCleared: 0,
} as const;

/** A fresh run record in state planned. */
export function newRun(disk: DiskRecord, id: string, trigger: RunTrigger, ctx: ClaimContext): RunRecord {
  const now = ctx.now();
  return {
    id,
    diskId: disk.id,
    trigger,
    kind: disk.baseSnapshot ? "incremental" : "full",
    state: "planned",
    startedAt: now.toISOString(),
    updatedAt: now.toISOString(),
    owner: ctx.owner,
    leaseUntil: leaseFrom(now, ctx.leaseSeconds),
    baseSnapshot: disk.baseSnapshot,
    ...NO_PROGRESS,
  };
}

/** Claims the disk for a new run, or takes over a run whose holder died. Throws BusyError when a live run holds it. */
export async function claimRun(ctx: ClaimContext, diskId: string, trigger: RunTrigger): Promise<Claim> {
  // Each pass either returns, throws, or changes a row under its ETag; a few passes settle any race.
  for (let pass = 0; pass < 8; pass++) {
    const disk = await ctx.lineage.getDisk(diskId);
    if (!disk) throw new NotFoundError(`disk ${diskId} is not registered`, "diskId");
    try {
      if (disk.activeRunId) {
        const active = await ctx.lineage.getRun(diskId, disk.activeRunId);
        if (!active) {
          // The lock was taken but the run row never written (crash in between): the lock is ours to use.
          const run = await ctx.lineage.addRun(newRun(disk, disk.activeRunId, trigger, ctx));
          return { disk, run, resumed: false };
        }
        if (!TERMINAL_STATES.includes(active.state)) {
          if (leaseHolds(active, ctx.now())) {
            throw new BusyError(diskId, active.id, holderWords(active.owner), active.leaseUntil);
          }
          ctx.log(`run ${active.id} of disk ${diskId} lost its holder (${active.owner}); resuming it`);
          const run = await ctx.lineage.updateRun({
            ...active,
            owner: ctx.owner,
            leaseUntil: leaseFrom(ctx.now(), ctx.leaseSeconds),
            updatedAt: ctx.now().toISOString(),
          });
          return { disk, run, resumed: true };
        }
        // A finished run still holds the lock: finish its bookkeeping, then claim afresh.
        const released =
          active.state === "succeeded" && disk.baseSnapshot !== active.sourceSnapshot
            ? advancedDisk(disk, active)
            : active.state === "unchanged"
              ? {
                  ...disk,
                  activeRunId: undefined,
                  lastRunId: active.id,
                  lastSuccessAt: active.finishedAt ?? disk.lastSuccessAt,
                }
              : { ...disk, activeRunId: undefined, lastRunId: active.id };
        await ctx.lineage.updateDisk(released);
        continue;
      }
      const id = newId(ctx.now(), "r");
      const locked = await ctx.lineage.updateDisk({ ...disk, activeRunId: id });
      const run = await ctx.lineage.addRun(newRun(locked, id, trigger, ctx));
      return { disk: locked, run, resumed: false };
    } catch (err) {
      if (err instanceof ConflictError) continue; // someone else moved first: look again
      throw err;
    }
  }
  throw new Error(`could not claim disk ${diskId}: its lineage row keeps changing; try again`);
}

/** Releases the disk's lock if this run still holds it. */
export async function releaseClaim(lineage: Lineage, diskId: string, runId: string): Promise<void> {
  for (let pass = 0; pass < 5; pass++) {
    const disk = await lineage.getDisk(diskId);
    if (!disk || disk.activeRunId !== runId) return;
    try {
      await lineage.updateDisk({ ...disk, activeRunId: undefined, lastRunId: runId });
      return;
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
    }
  }
}
