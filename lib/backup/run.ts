/**
 * One backup run of one disk, as stages a newcomer can read top to bottom:
 *
 *   claim (claim.ts) → snapshot the source → prepare the backup blob → list → plan → copy →
 *   checkpoint (pipeline.ts) → seal (seal.ts) → advance the base, delete the old one
 *
 * Guarantees (DESIGN.md invariants):
 * - the restore point is a snapshot of the backup blob taken only after every change of the
 *   source snapshot was applied, so it equals that snapshot byte for byte;
 * - the old base is deleted only after the new restore point is recorded and the disk row points
 *   at the new base;
 * - every step is idempotent and checkpointed: a run taken over after a crash adopts its own
 *   snapshots (tagged with its id) and continues from its checkpoint, never from zero;
 * - a run that finds nothing changed ends `unchanged`: recorded, no new restore point, its
 *   snapshot deleted, the base kept (unless asked to seal anyway with `force`);
 * - a failed run deletes its source snapshot and releases the disk; the next run diffs from the
 *   base again, which covers whatever the failed run half-wrote;
 * - memory is the lister's lookahead plus concurrency × 4 MiB.
 */
import { errorInfo, isRetryable, rootCause } from "../core/retry";
import { messageOf } from "../core/errors";
import type { Deps } from "../deps";
import { ChunkCopier } from "../copy/copier";
import { listChanges, type Listing, type ListSpec } from "../diff/lister";
import { backupLocation } from "../lineage/locations";
import {
  TERMINAL_STATES,
  type Detection,
  type DiskRecord,
  type RunRecord,
  type RunTrigger,
} from "../lineage/types";
import { WrittenWindows } from "../digests/written";
import { WindowSet } from "../ranges";
import type { OpenedSnapshot, Source } from "../sources/port";
import { describeStorageError, isDiffRefusal, StorageError } from "../storage/errors";
import type { BlobAddress } from "../storage/port";
import type { BlobLocation } from "../storage/urls";
import { claimRun, leaseFrom, leaseHolds, ownerId } from "./claim";
import { CopyStage, NO_COUNTS, type FanoutPlan, type PlannedBatch, type RunCounters } from "./pipeline";
import { advanceBase, cleanUpFailedRun, finishUnchanged, seal } from "./seal";
import { LostRunError, RunTracker } from "./tracker";

/**
 * What happens around a run without being part of it. Hooks are best effort: an error in one is
 * logged and never changes the run's outcome (the restore point is already sealed).
 */
export interface RunHooks {
  /**
   * After a run sealed and the disk advanced: digests, retention. `touched`: the windows it wrote,
   * and `written`: the MD5s of what it wrote, when this invocation saw the whole run.
   */
  afterSeal?(
    deps: Deps,
    disk: DiskRecord,
    run: RunRecord,
    touched?: WindowSet,
    written?: WrittenWindows,
  ): Promise<void>;
  /** After a run reached a terminal state: telemetry. */
  runEnded?(run: RunRecord, disk: DiskRecord): void;
}

export interface BackupDeps extends Deps {
  hooks?: RunHooks;
}

/** Calls one hook, logging instead of throwing. */
export async function callHook(deps: Deps, name: string, call: () => unknown): Promise<void> {
  try {
    await call();
  } catch (err) {
    deps.log.warn(`${name} after the run did not complete: ${messageOf(err)}`);
  }
}

export interface Progress {
  runId: string;
  phase: "snapshot" | "listing" | "copying" | "sealing";
  /** Disk offset below which the run's changes are applied, of `size`. */
  position: number;
  size: number;
  bytesCopied: number;
  bytesCleared: number;
  /** Bytes planned so far (what the listing found to copy). */
  bytesPlanned: number;
  chunksDone: number;
}

/** How a run is driven: inline (CLI, timer's queued run small enough) or planning batches for queue workers. */
export interface FanoutOptions {
  thresholdBytes: number;
  batchChunks: number;
  /** Epoch ms after which planning checkpoints and stops (the caller continues it in a new invocation). */
  deadline: number;
  send(batch: PlannedBatch): Promise<void>;
  /** Owner written on the run when planning pauses, so the continuation message may take it over. */
  pauseOwner: string;
}

export interface BackupOptions {
  trigger: RunTrigger;
  onProgress?: (progress: Progress) => void;
  /** Announces each phase as it starts (the CLI's -v and its status lines). */
  onPhase?: (phase: string) => void;
  fanout?: FanoutOptions;
  /** Seal a restore point even when nothing changed. */
  force?: boolean;
}

/**
 * Why a diff from the base was refused, in the reason of the resync: the code and the first line
 * of what was said (the service's message, or the source's own, e.g. a base left by a migration
 * or deleted behind diskdelta's back), never the request ids that follow it.
 */
function diffRefusal(err: unknown): string {
  const root = rootCause(err);
  const detail = root instanceof StorageError ? root.detail.split("\n")[0].trim() : "";
  return `the diff from the base was refused: ${errorInfo(root).code}${detail ? ` (${detail})` : ""}`;
}

/** True when the endpoint is known to answer page-range diffs with the current ranges (Azure/Azurite#812). */
export function answersDiffsWrongly(serverHeader: string | undefined): boolean {
  return /azurite/i.test(serverHeader ?? "");
}

/** Runs one backup of `diskId` and returns its final run record. Throws BusyError when a live run holds the disk. */
export async function backupDisk(
  deps: BackupDeps,
  diskId: string,
  options: BackupOptions,
): Promise<RunRecord> {
  const claim = await claimRun(
    {
      lineage: deps.lineage,
      leaseSeconds: deps.config.leaseSeconds,
      owner: ownerId(),
      now: deps.now,
      log: (m) => deps.log.info(m),
    },
    diskId,
    options.trigger,
  );
  return runExecution(deps, claim.disk, claim.run, options, "any");
}

/**
 * Takes over run `runId` of `diskId` (owner and lease, under the run's ETag) and carries it as far
 * as it goes in this invocation. Returns undefined when another live invocation holds the run, or
 * when it has already finished. `failOn: "permanent"` leaves the run as it is on retryable errors
 * (the queue redelivers the message); "any" fails the run on every error.
 */
export async function continueRun(
  deps: BackupDeps,
  diskId: string,
  runId: string,
  options: BackupOptions & { takeOverFrom?: string },
  failOn: "any" | "permanent",
): Promise<RunRecord | undefined> {
  const disk = await deps.lineage.getDisk(diskId);
  const run = await deps.lineage.getRun(diskId, runId);
  if (!disk || !run || TERMINAL_STATES.includes(run.state)) return undefined;
  if (disk.activeRunId !== runId) return undefined;
  if (run.owner !== options.takeOverFrom && leaseHolds(run, deps.now())) return undefined;
  let mine: RunRecord;
  try {
    mine = await deps.lineage.updateRun({
      ...run,
      owner: ownerId(),
      leaseUntil: leaseFrom(deps.now(), deps.config.leaseSeconds),
      updatedAt: deps.now().toISOString(),
    });
  } catch (err) {
    if ((err as Error).name === "ConflictError") return undefined; // another invocation took it first
    throw err;
  }
  return runExecution(deps, disk, mine, options, failOn);
}

/** Carries on a run this invocation already owns (e.g. one it just moved to sealing). */
export function resumeOwnedRun(deps: BackupDeps, disk: DiskRecord, run: RunRecord): Promise<RunRecord> {
  return runExecution(deps, disk, run, { trigger: run.trigger }, "permanent");
}

async function runExecution(
  deps: BackupDeps,
  disk: DiskRecord,
  run: RunRecord,
  options: BackupOptions,
  failOn: "any" | "permanent",
): Promise<RunRecord> {
  const tracker = new RunTracker(deps.lineage, run, deps.config.leaseSeconds, deps.now);
  const execution = new Execution(deps, disk, tracker, options);
  tracker.startHeartbeat();
  try {
    return await execution.execute();
  } catch (err) {
    if (err instanceof LostRunError) throw err;
    if (failOn === "any" || !isRetryable(err)) {
      await execution.fail(err);
    } else if (options.fanout) {
      // The queue redelivers the message: hand the run back to it now, or the retry would find
      // the run held by this (live) process and wait out the lease.
      await tracker.update({ owner: options.fanout.pauseOwner }).catch(() => undefined);
    }
    throw err;
  } finally {
    tracker.stop();
  }
}

/** Thrown by the listing when the diff's answer comes from an endpoint that answers diffs wrongly. */
class UntrustedDiff extends Error {
  constructor(readonly server: string) {
    super(`${server} answers page-range diffs wrongly`);
  }
}

class Execution {
  private readonly source: Source;
  private readonly backup: BlobLocation;
  /** Windows this invocation wrote or cleared; handed to the digests only if it saw the whole run. */
  private touched?: WindowSet;
  /** The MD5s of what this invocation wrote, under the same condition as `touched`. */
  private written?: WrittenWindows;
  /** The backup blob's sequence number before this run wrote anything (see DiskRecord.baseFence). */
  private backupSequence?: number;

  constructor(
    private readonly deps: BackupDeps,
    private disk: DiskRecord,
    private readonly tracker: RunTracker,
    private readonly options: BackupOptions,
  ) {
    this.source = deps.sources.of(disk);
    this.backup = backupLocation(disk);
  }

  private get run(): RunRecord {
    return this.tracker.current;
  }

  private phase(name: string): void {
    this.options.onPhase?.(name);
    this.deps.log.info(`run ${this.run.id}: ${name}`);
  }

  async execute(): Promise<RunRecord> {
    if (this.run.state === "planned") await this.takeSnapshot();
    // A fanned-out run whose plan is complete is sealed by whoever records its last batch.
    if (this.run.state === "copying" && this.run.planComplete !== "yes") await this.copy();
    if (this.run.state === "sealing") {
      if (this.run.mode === "fanout" && this.run.sourceSnapshot) {
        // Every batch is done: end the access its planner and workers kept open (best effort;
        // the next run's sweep ends what is left).
        await this.source
          .endAccess(this.run.sourceSnapshot)
          .catch((err: unknown) =>
            this.deps.log.warn(`could not end access to the snapshot: ${messageOf(err)}`),
          );
      }
      this.phase("sealing the restore point");
      await seal(this.deps, this.disk, this.tracker, this.backup);
    }
    if (this.run.state === "succeeded") {
      this.disk = await advanceBase(this.deps, this.disk, this.run, this.source);
      const hooks = this.deps.hooks;
      const { touched, written } = this;
      if (hooks?.afterSeal) this.phase("recording digests and applying retention");
      await callHook(this.deps, "afterSeal", () =>
        hooks?.afterSeal?.(this.deps, this.disk, this.run, touched, written),
      );
      await callHook(this.deps, "runEnded", () => hooks?.runEnded?.(this.run, this.disk));
    } else if (this.run.state === "unchanged") {
      await callHook(this.deps, "runEnded", () => this.deps.hooks?.runEnded?.(this.run, this.disk));
    }
    return this.run;
  }

  /** Snapshot the source (adopting the run's own after a crash), after sweeping snapshots leaked by dead runs. */
  private async takeSnapshot(): Promise<void> {
    this.phase("taking a snapshot of the disk");
    const fail = (err: unknown) => {
      throw new Error(
        describeStorageError(err, `disk ${this.disk.id} (${this.source.label})`, this.source.role),
        { cause: err },
      );
    };
    await this.sweepLeakedSnapshots().catch(fail);
    const snapshot = await this.source.snapshotFor(this.disk.id, this.run.id).catch(fail);
    await this.tracker.update({
      sourceSnapshot: snapshot.id,
      sourceSize: snapshot.size,
      ...(snapshot.capturedAt ? { sourceCapturedAt: snapshot.capturedAt } : {}),
      state: "copying",
    });
    this.deps.log.info(
      `run ${this.run.id}: snapshot ${snapshot.id} of disk ${this.disk.id} (${snapshot.size} bytes)`,
    );
  }

  /** Deletes this disk's tagged source snapshots that are neither the base nor this run's, nor a live run's. */
  private async sweepLeakedSnapshots(): Promise<void> {
    const keep = new Set([this.disk.baseSnapshot, this.run.sourceSnapshot].filter(Boolean));
    for (const s of await this.source.taggedSnapshots(this.disk.id)) {
      if (keep.has(s.id) || s.runId === this.run.id) continue;
      const owner = await this.deps.lineage.getRun(this.disk.id, s.runId);
      if (owner && !TERMINAL_STATES.includes(owner.state)) continue;
      this.deps.log.info(`deleting leaked snapshot ${s.id} of disk ${this.disk.id} (run ${s.runId})`);
      await this.source.deleteSnapshot(s.id);
    }
  }

  /** Makes the backup blob exist with the source snapshot's size; returns whether it already existed. */
  private async prepareBackupBlob(size: number): Promise<boolean> {
    const { storage, log } = this.deps;
    const blob: BlobAddress = { kind: "blob", location: this.backup };
    try {
      const props = await storage.properties(blob);
      this.backupSequence = props?.sequenceNumber;
      if (!props) {
        await storage.ensureContainer(this.backup);
        await storage.create(blob, size);
        return false;
      }
      if (props.size !== size) {
        log.info(`resizing backup blob ${this.backup.url} from ${props.size} to ${size} bytes`);
        await storage.resize(blob, size);
      }
      return true;
    } catch (err) {
      throw new Error(
        describeStorageError(err, `backup blob ${this.backup.url}`, "Storage Blob Data Contributor"),
        { cause: err },
      );
    }
  }

  /**
   * Makes the backup blob this run's before its first write: its sequence number becomes the run's
   * fence (recorded on the run; a run taken over keeps its fence). The fence is above the blob's
   * current number, so every earlier run's fence is stale and a straggling write of one is refused
   * (412 SequenceNumberConditionNotMet) rather than landing over this run's bytes.
   */
  private async fence(): Promise<number> {
    if (this.run.fence !== undefined) return this.run.fence;
    const fence = await this.setFence();
    await this.tracker.update({ fence });
    return fence;
  }

  /** Sets a new fence on the backup blob (above its number, read when this invocation prepared it) and returns it. */
  private async setFence(): Promise<number> {
    const blob: BlobAddress = { kind: "blob", location: this.backup };
    const current = this.backupSequence ?? (await this.deps.storage.properties(blob))?.sequenceNumber ?? 0;
    const fence = Math.max(this.deps.now().getTime(), current + 1);
    await this.deps.storage.setSequenceNumber(blob, fence);
    return fence;
  }

  private chooseDetection(backupExisted: boolean): { detection: Detection; reason?: string } {
    if (this.run.detection) return { detection: this.run.detection };
    if (!this.disk.baseSnapshot) {
      // A first copy onto an empty blob needs only the source's valid ranges; onto a blob that
      // already holds data (an earlier failed first run) a compare writes only what is missing.
      return backupExisted
        ? { detection: "compare", reason: "the backup blob already holds data from an unfinished first run" }
        : { detection: "valid-ranges" };
    }
    if (this.deps.config.diffMode === "compare")
      return { detection: "compare", reason: "DISKDELTA_DIFF_MODE=compare" };
    return { detection: "service-diff" };
  }

  private async copy(): Promise<void> {
    const { config } = this.deps;
    const size = this.run.sourceSize ?? 0;
    const snapshot = this.run.sourceSnapshot;
    if (!snapshot) throw new Error(`run ${this.run.id} is copying without a source snapshot`);
    const backupExisted = await this.prepareBackupBlob(size);
    const chosen = this.chooseDetection(backupExisted);
    let detection = chosen.detection;
    if (detection !== this.run.detection)
      // Written with the next update: a run resumed without it chooses again (and, finding the
      // backup blob it created, compares, which is always right).
      this.tracker.defer({ detection, reason: chosen.reason ?? this.run.reason });
    const opened = await this.source.open(snapshot);
    let closed = false;
    const base =
      detection === "service-diff" && this.run.baseSnapshot
        ? await this.source.open(this.run.baseSnapshot)
        : undefined;
    try {
      const start = this.run.checkpoint ?? 0;
      if (start === 0 && !this.options.fanout) {
        this.touched = new WindowSet(size);
        this.written = new WrittenWindows();
      }
      if (start > 0) this.deps.log.info(`run ${this.run.id}: resuming at byte ${start} of ${size}`);
      const fanout = await this.fanoutPlan(() => copier().then(() => undefined));
      let committed: RunCounters = { ...NO_COUNTS, ...pick(this.run) };
      let from = start;
      let fenced: Promise<ChunkCopier> | undefined;
      const copier = () =>
        (fenced ??= this.fence().then(
          (fence) =>
            new ChunkCopier(
              this.deps.storage,
              opened.address,
              { kind: "blob", location: this.backup },
              config.copyMode,
              fence,
              this.written,
            ),
        ));
      this.phase(`listing and copying (${detection})`);
      let compared = await this.compareSide();
      for (;;) {
        const stage = new CopyStage({
          deps: this.deps,
          size,
          start: from,
          committed,
          copier,
          compare: { first: opened.address, second: compared },
          fanout,
          touched: this.touched,
          checkpoint: (c, final) => {
            const fields: Partial<RunRecord> = {
              checkpoint: c.offset,
              ...c.counters,
              ...(c.batchesTotal !== undefined ? { batchesTotal: c.batchesTotal } : {}),
            };
            // The last checkpoint of a stage goes out with the update that always follows it
            // (unchanged, sealing, paused, plan complete, a switch to compare).
            if (final) {
              this.tracker.defer(fields);
              return Promise.resolve();
            }
            return this.tracker.update(fields).then(() => undefined);
          },
          onProgress: (position, live) => this.report("copying", position, live),
        });
        let end;
        try {
          end = await stage.run(this.listings(detection, opened, base, from, size, compared));
        } catch (err) {
          const untrusted = err instanceof UntrustedDiff;
          if (detection !== "service-diff" || !(untrusted || isDiffRefusal(err))) throw err;
          // Everything below the stage's prefix is applied; compare from there.
          await stage.checkpoint(true);
          from = stage.prefix.prefix;
          committed = { ...stage.prefix.committed };
          detection = "compare";
          const reason = untrusted
            ? `the endpoint (${(err as UntrustedDiff).server}) answers page-range diffs wrongly`
            : diffRefusal(err);
          this.deps.log.info(`run ${this.run.id}: ${reason}; comparing instead`);
          await this.tracker.update(
            untrusted ? { detection, reason } : { detection, kind: "resync", reason },
          );
          compared = await this.compareSide();
          continue;
        }
        if (end === "paused") {
          await this.tracker.update({ owner: this.options.fanout!.pauseOwner });
          this.deps.log.info(
            `run ${this.run.id}: planning paused at byte ${this.run.checkpoint} of ${size}; it continues in a new invocation`,
          );
          return;
        }
        break;
      }
      if (this.run.mode === "fanout") {
        // The queue workers copy the rest; the one that records the last batch seals.
        await this.tracker.update({ checkpoint: size, planComplete: "yes" });
        return;
      }
      if (this.isUnchanged(size)) {
        await finishUnchanged(this.deps, this.disk, this.tracker, this.source);
        return;
      }
      this.report("sealing", size, { ...NO_COUNTS, ...pick(this.run) });
      // The snapshots' reads (managed disks: their grants) end before the run says it is sealing,
      // so a process killed from here on leaves no grant open.
      closed = true;
      await opened.close();
      await base?.close();
      // A run that wrote nothing still fences the blob before its seal: the point's fence is then
      // known (DiskRecord.baseFence), so later runs that find nothing changed can end unchanged.
      await this.tracker.update(
        this.run.fence === undefined
          ? { state: "sealing", fence: await this.setFence() }
          : { state: "sealing" },
      );
    } finally {
      if (!closed) {
        // A fanned-out run's workers read the snapshot on: its access stays open for them.
        await opened.close(this.run.mode === "fanout");
        await base?.close();
      }
    }
  }

  /**
   * Nothing written, nothing cleared, same size as the base, and the backup blob untouched since
   * the base point was sealed (its sequence number is still that seal's fence: no failed run left
   * bytes in it that the base point does not hold): the base point still equals the disk, so no
   * new point is made (unless forced).
   */
  private isUnchanged(size: number): boolean {
    const r = this.run;
    // A resync's base could not be diffed from (deleted, overwritten, migrated): this run's
    // snapshot must become the base, so it seals even when it found nothing to write.
    if (this.options.force || !this.disk.baseSnapshot || r.kind === "full" || r.kind === "resync")
      return false;
    if (
      this.disk.baseFence === undefined ||
      this.backupSequence !== this.disk.baseFence ||
      r.fence !== undefined
    )
      return false;
    return (
      r.rangesWritten === 0 &&
      r.rangesCleared === 0 &&
      r.bytesCopied === 0 &&
      r.bytesCleared === 0 &&
      (this.disk.baseSize ?? size) === size
    );
  }

  /**
   * What a compare holds the source snapshot against. The base point's own snapshot when the
   * backup blob still carries the base seal's fence, or this run's (no one else wrote it since the
   * base point): the blob is then the base point plus some of this run's own changes, so comparing
   * with the immutable point finds exactly the changes since the base — the same on a resume as in
   * a run never interrupted, and counted the same. Otherwise (an earlier run left bytes in the blob
   * that the base point does not hold, or there is no base point) the blob itself, so those bytes
   * are found and repaired too.
   */
  private async compareSide(): Promise<BlobAddress> {
    const live: BlobAddress = { kind: "blob", location: this.backup };
    const seq = this.backupSequence;
    const clean =
      seq !== undefined &&
      (seq === this.disk.baseFence || (this.run.fence !== undefined && seq === this.run.fence));
    if (!clean || !this.disk.basePoint || this.disk.baseFence === undefined) return live;
    const point = await this.deps.lineage.getPoint(this.disk.id, this.disk.basePoint);
    if (!point || point.size !== this.run.sourceSize) return live;
    return { kind: "blob", location: this.backup, snapshot: point.backupSnapshot };
  }

  /** The listing for a detection, from `from`; a diff's first answer is checked for an endpoint that answers wrongly. */
  private async *listings(
    detection: Detection,
    opened: OpenedSnapshot,
    base: OpenedSnapshot | undefined,
    from: number,
    size: number,
    compared: BlobAddress,
  ): AsyncGenerator<Listing> {
    const { config } = this.deps;
    const spec: ListSpec =
      detection === "valid-ranges"
        ? { kind: "valid", address: opened.address }
        : detection === "compare"
          ? { kind: "compare", first: opened.address, second: compared }
          : { kind: "diff", address: opened.address, base: base!.base };
    let checked = detection !== "service-diff" || config.diffMode !== "auto";
    for await (const piece of listChanges(this.deps.storage, spec, from, size, {
      baseSpan: config.segmentBytes,
      lookahead: config.listLookahead,
    })) {
      if (!checked) {
        // The answer came from an endpoint that ignores the base (Azurite#812): no cleared ranges, every valid page listed. Never trust it.
        if (answersDiffsWrongly(piece.server)) throw new UntrustedDiff(piece.server!);
        checked = true;
      }
      yield piece;
    }
  }

  /** `fenced` fences the backup blob: batches carry the run's fence, so it is set before the first one goes out. */
  private async fanoutPlan(fenced: () => Promise<void>): Promise<FanoutPlan | undefined> {
    const f = this.options.fanout;
    if (!f) return undefined;
    // Every planning invocation is a new generation: batches a dead planner sent past its last
    // checkpoint are then told apart from this one's (and not counted), even if numbered alike.
    const nextBatch = this.run.batchesTotal ?? 0;
    const generation = (this.run.planGeneration ?? 0) + 1;
    await this.tracker.update({ planGeneration: generation, generationStart: nextBatch });
    return {
      thresholdBytes: f.thresholdBytes,
      batchChunks: f.batchChunks,
      active: this.run.mode === "fanout",
      activate: async () => {
        this.deps.log.info(
          `run ${this.run.id}: more than ${f.thresholdBytes} bytes to copy: fanning out to queue workers`,
        );
        await fenced();
        await this.tracker.update({ mode: "fanout" });
      },
      send: f.send,
      deadline: f.deadline,
      generation,
      nextBatch,
    };
  }

  private report(phase: Progress["phase"], position: number, live: RunCounters): void {
    this.options.onProgress?.({
      runId: this.run.id,
      phase,
      position,
      size: this.run.sourceSize ?? 0,
      bytesCopied: live.bytesCopied,
      bytesCleared: live.bytesCleared,
      bytesPlanned: live.bytesPlanned,
      chunksDone: live.chunksDone,
    });
  }

  async fail(err: unknown): Promise<void> {
    const message = messageOf(err);
    this.deps.log.error(`run ${this.run.id} of disk ${this.disk.id} failed: ${message}`);
    const before = this.run;
    try {
      await this.tracker.update({
        state: "failed",
        error: message,
        finishedAt: this.deps.now().toISOString(),
      });
      await cleanUpFailedRun(this.deps, this.disk, before, this.source);
    } catch (updateError) {
      this.deps.log.warn(
        `run ${this.run.id}: cleanup after the failure was incomplete (${messageOf(updateError)}); the next run finishes it`,
      );
    }
    await callHook(this.deps, "runEnded", () => this.deps.hooks?.runEnded?.(this.run, this.disk));
  }
}

/** The counters of a run row. */
export function pick(run: RunRecord): RunCounters {
  return {
    rangesWritten: run.rangesWritten,
    rangesCleared: run.rangesCleared,
    bytesPlanned: run.bytesPlanned,
    bytesCopied: run.bytesCopied,
    bytesCleared: run.bytesCleared,
    chunksTotal: run.chunksTotal,
    chunksDone: run.chunksDone,
  };
}
