/**
 * One backup run of one disk: claim → snapshot → detect and copy, segment by segment → seal →
 * advance the base → delete the old base. Guarantees (DESIGN.md invariants):
 *
 * - the restore point is a snapshot of the backup blob taken only after every change of the
 *   source snapshot was applied, so it equals that snapshot byte for byte;
 * - the old base is deleted only after the new restore point is recorded and the disk row points
 *   at the new base;
 * - every step is idempotent and checkpointed: `checkpoint` is the disk offset below which the
 *   run's changes are applied; a run taken over after a crash adopts its own snapshots (tagged
 *   with its id) and continues from the checkpoint, never from zero;
 * - a failed run deletes its source snapshot and releases the disk; the next run diffs from the
 *   base again, which covers whatever the failed run half-wrote;
 * - memory is one segment's ranges plus concurrency × 4 MiB.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import type { Config } from "../config";
import type { TimerTickReport } from "../app/timer";
import type { StorageClients } from "../azure/clients";
import { describeStorageError, errorInfo, isDiffRefusal, isNotFound, isRetryable } from "../azure/errors";
import { withRetry, type RetryPolicy } from "../azure/retry";
import { blobLocation, parseAccountUrl, parseBlobUrl, type BlobLocation } from "../azure/urls";
import { forEachBounded } from "../concurrency";
import { PageCopier } from "../copy";
import { compareSegment, serviceDiffSegment, validRangesSegment, type ChangeSet } from "../diff";
import {
  ConflictError,
  TERMINAL_STATES,
  type Detection,
  type DiskRecord,
  type Lineage,
  type RunRecord,
  type RunTrigger,
} from "../lineage/types";
import { chunksOf, segments, totalBytes, type Chunk } from "../ranges";
import { advancedDisk, claimRun, leaseFrom, leaseHolds, ownerId, releaseClaim } from "./claim";
import { adoptOrTakeSnapshot, deleteSnapshot, listTaggedSnapshots } from "./snapshots";
import { LostRunError, RunTracker } from "./tracker";

/** Longest stretch of unchanged segments between two checkpoints: re-listing that much after a crash is cheap. */
const CHECKPOINT_IDLE_MS = 10_000;

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const silentLogger: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

export interface EngineDeps {
  config: Config;
  clients: StorageClients;
  lineage: Lineage;
  log: Logger;
  now?: () => Date;
  hooks?: RunHooks;
}

/**
 * What happens around a run without being part of it. Hooks are best effort: an error in one is
 * logged and never changes the run's outcome (the restore point is already sealed).
 */
export interface RunHooks {
  /** After a run sealed and the disk advanced: digests, retention. */
  afterSeal?(deps: EngineDeps, disk: DiskRecord, run: RunRecord): Promise<void>;
  /** After a run reached a terminal state (succeeded or failed): telemetry. */
  runEnded?(run: RunRecord, disk: DiskRecord): void;
  /**
   * After a timer tick listed the disks and requested the due ones: telemetry (each disk's status
   * and the tick as a heartbeat). Synchronous; when absent, the tick reads nothing extra for it.
   */
  timerTicked?(report: TimerTickReport): void;
}

/** Calls one hook, logging instead of throwing. */
export async function callHook(deps: EngineDeps, name: string, call: () => unknown): Promise<void> {
  try {
    await call();
  } catch (err) {
    deps.log.warn(`${name} after the run did not complete: ${errorInfo(err).message}`);
  }
}

export interface Progress {
  runId: string;
  phase: "snapshot" | "copying" | "sealing";
  /** Disk offset scanned so far, of `size`. */
  position: number;
  size: number;
  bytesCopied: number;
  bytesCleared: number;
  chunksDone: number;
}

/** A batch of chunks planned for queue workers (see lib/app/backups.ts). */
export interface PlannedBatch {
  batch: number;
  generation: number;
  chunks: Chunk[];
}

export interface FanoutOptions {
  /** Bytes to write up to which the planner copies by itself; past it, the rest fans out. */
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
  fanout?: FanoutOptions;
}

/**
 * Ranges per batch message, at most: a range is about 25 bytes of JSON, so 1,000 keep a message
 * near 25 KiB, far below the queue's 64 KiB limit even for fragmented chunks.
 */
const MAX_RANGES_PER_BATCH = 1000;

export function retryPolicy(config: Config, log?: Logger): RetryPolicy {
  return {
    attempts: config.retryAttempts,
    baseMs: config.retryBaseMs,
    onRetry: (err, attempt, delay) =>
      log?.warn(
        `retrying after ${errorInfo(err).code ?? errorInfo(err).status ?? "error"} (try ${attempt}, waiting ${Math.round(delay)} ms)`,
      ),
  };
}

export function diskLocations(disk: DiskRecord): { source: BlobLocation; backup: BlobLocation } {
  return {
    source: parseBlobUrl(disk.sourceUrl, "source URL"),
    backup: blobLocation(
      parseAccountUrl(disk.backupAccountUrl, "backup account URL"),
      disk.backupContainer,
      disk.backupBlob,
    ),
  };
}

/** True when the endpoint is known to answer page-range diffs with the current ranges (Azurite#812). */
export function answersDiffsWrongly(serverHeader: string | undefined): boolean {
  return /azurite/i.test(serverHeader ?? "");
}

/** Runs one backup of `diskId` and returns its final run record. Throws BusyError when a live run holds the disk. */
export async function backupDisk(
  deps: EngineDeps,
  diskId: string,
  options: BackupOptions,
): Promise<RunRecord> {
  const now = deps.now ?? (() => new Date());
  const { config, lineage, log } = deps;
  const claim = await claimRun(
    { lineage, leaseSeconds: config.leaseSeconds, owner: ownerId(), now, log: (m) => log.info(m) },
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
  deps: EngineDeps,
  diskId: string,
  runId: string,
  options: BackupOptions & { takeOverFrom?: string },
  failOn: "any" | "permanent",
): Promise<RunRecord | undefined> {
  const now = deps.now ?? (() => new Date());
  const disk = await deps.lineage.getDisk(diskId);
  const run = await deps.lineage.getRun(diskId, runId);
  if (!disk || !run || TERMINAL_STATES.includes(run.state)) return undefined;
  if (disk.activeRunId !== runId) return undefined;
  if (run.owner !== options.takeOverFrom && leaseHolds(run, now())) return undefined;
  let mine: RunRecord;
  try {
    mine = await deps.lineage.updateRun({
      ...run,
      owner: ownerId(),
      leaseUntil: leaseFrom(now(), deps.config.leaseSeconds),
      updatedAt: now().toISOString(),
    });
  } catch (err) {
    if (err instanceof ConflictError) return undefined; // another invocation took it first
    throw err;
  }
  return runExecution(deps, disk, mine, options, failOn);
}

/** Carries on a run this invocation already owns (e.g. one it just moved to sealing). */
export function resumeOwnedRun(deps: EngineDeps, disk: DiskRecord, run: RunRecord): Promise<RunRecord> {
  return runExecution(deps, disk, run, { trigger: run.trigger }, "permanent");
}

/**
 * Fails run `runId` with `reason` (unless it already ended): the run row says why, then
 * cleanUpFailedRun releases the disk and deletes what the run made.
 */
export async function failRun(
  deps: EngineDeps,
  diskId: string,
  runId: string,
  reason: string,
): Promise<void> {
  const now = deps.now ?? (() => new Date());
  for (let pass = 0; pass < 5; pass++) {
    const run = await deps.lineage.getRun(diskId, runId);
    if (!run || TERMINAL_STATES.includes(run.state)) return;
    let failed: RunRecord;
    try {
      failed = await deps.lineage.updateRun({
        ...run,
        state: "failed",
        error: reason,
        finishedAt: now().toISOString(),
        updatedAt: now().toISOString(),
      });
    } catch (err) {
      if (err instanceof ConflictError) continue;
      throw err;
    }
    deps.log.error(`run ${runId} of disk ${diskId} failed: ${reason}`);
    const disk = await deps.lineage.getDisk(diskId);
    if (!disk) return;
    await cleanUpFailedRun(deps, disk, run, retryPolicy(deps.config, deps.log));
    await callHook(deps, "runEnded", () => deps.hooks?.runEnded?.(failed, disk));
    return;
  }
}

/**
 * After run `run` (as it was before it failed) was marked failed: releases the disk, deletes the
 * run's source snapshot unless it is the base, and, if it failed while sealing, the backup
 * snapshot its seal took but never recorded. Cleanup is best effort: what fails here is logged,
 * and the next run finishes it (claimRun releases a finished run's lock; the sweep deletes leaked
 * source snapshots).
 */
async function cleanUpFailedRun(
  deps: EngineDeps,
  disk: DiskRecord,
  run: RunRecord,
  policy: RetryPolicy,
): Promise<void> {
  try {
    await releaseClaim(deps.lineage, disk.id, run.id);
    if (run.sourceSnapshot && run.sourceSnapshot !== disk.baseSnapshot) {
      await deleteSnapshot(deps.clients.pageBlob(diskLocations(disk).source), run.sourceSnapshot, policy);
    }
    if (run.state === "sealing") await deleteUnrecordedBackupSnapshots(deps, disk, run.id, policy);
  } catch (err) {
    deps.log.warn(
      `run ${run.id}: cleanup after the failure was incomplete (${errorInfo(err).message}); the next run finishes it`,
    );
  }
}

/** The restore point a run seals is named after it: r-… → p-…. */
export function pointIdOf(runId: string): string {
  return runId.replace(/^r-/, "p-");
}

/**
 * Deletes the backup snapshots a failed run's seal took but never recorded as a restore point
 * (tagged with the run; a crash or an error fell between the snapshot and the point row). A
 * recorded point keeps its snapshot: nothing here touches one.
 */
async function deleteUnrecordedBackupSnapshots(
  deps: EngineDeps,
  disk: DiskRecord,
  runId: string,
  policy: RetryPolicy,
): Promise<void> {
  if (await deps.lineage.getPoint(disk.id, pointIdOf(runId))) return;
  const { backup } = diskLocations(disk);
  const tagged = await listTaggedSnapshots(deps.clients.container(backup), backup.blob, disk.id, policy);
  for (const t of tagged.filter((t) => t.runId === runId)) {
    await deleteSnapshot(deps.clients.pageBlob(backup), t.snapshot, policy);
    deps.log.info(`run ${runId}: deleted its backup snapshot ${t.snapshot}, which no restore point records`);
  }
}

async function runExecution(
  deps: EngineDeps,
  disk: DiskRecord,
  run: RunRecord,
  options: BackupOptions,
  failOn: "any" | "permanent",
): Promise<RunRecord> {
  const now = deps.now ?? (() => new Date());
  const tracker = new RunTracker(deps.lineage, run, deps.config.leaseSeconds, now);
  const execution = new Execution(deps, disk, tracker, options, now);
  tracker.startHeartbeat(() => execution.counters());
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

/** Groups chunks into batches of at most `size` chunks and MAX_RANGES_PER_BATCH ranges, lazily. */
function* batchesOf(chunks: Iterable<Chunk>, size: number): Generator<Chunk[]> {
  let batch: Chunk[] = [];
  let ranges = 0;
  for (const whole of chunks) {
    // A window can hold up to 4,096 separate ranges; split such a chunk so one message stays small.
    for (let i = 0; i < whole.ranges.length; i += MAX_RANGES_PER_BATCH) {
      const part = whole.ranges.slice(i, i + MAX_RANGES_PER_BATCH);
      const chunk =
        part.length === whole.ranges.length
          ? whole
          : { index: whole.index, ranges: part, bytes: totalBytes(part) };
      if (batch.length > 0 && (batch.length >= size || ranges + chunk.ranges.length > MAX_RANGES_PER_BATCH)) {
        yield batch;
        batch = [];
        ranges = 0;
      }
      batch.push(chunk);
      ranges += chunk.ranges.length;
    }
  }
  if (batch.length > 0) yield batch;
}

class Execution {
  private readonly policy: RetryPolicy;
  private readonly source: BlobLocation;
  private readonly backup: BlobLocation;
  private stats: Pick<
    RunRecord,
    | "bytesCopied"
    | "bytesCleared"
    | "chunksDone"
    | "chunksTotal"
    | "rangesWritten"
    | "rangesCleared"
    | "bytesPlanned"
  >;

  constructor(
    private readonly deps: EngineDeps,
    private disk: DiskRecord,
    private readonly tracker: RunTracker,
    private readonly options: BackupOptions,
    private readonly now: () => Date,
  ) {
    this.policy = retryPolicy(deps.config, deps.log);
    ({ source: this.source, backup: this.backup } = diskLocations(disk));
    const r = tracker.current;
    this.stats = {
      bytesCopied: r.bytesCopied,
      bytesCleared: r.bytesCleared,
      chunksDone: r.chunksDone,
      chunksTotal: r.chunksTotal,
      rangesWritten: r.rangesWritten,
      rangesCleared: r.rangesCleared,
      bytesPlanned: r.bytesPlanned,
    };
  }

  counters(): Partial<RunRecord> {
    return { ...this.stats };
  }

  private get run(): RunRecord {
    return this.tracker.current;
  }

  private report(phase: Progress["phase"], position: number): void {
    this.options.onProgress?.({
      runId: this.run.id,
      phase,
      position,
      size: this.run.sourceSize ?? 0,
      bytesCopied: this.stats.bytesCopied,
      bytesCleared: this.stats.bytesCleared,
      chunksDone: this.stats.chunksDone,
    });
  }

  async execute(): Promise<RunRecord> {
    const { clients, log } = this.deps;
    const sourceBlob = clients.pageBlob(this.source);
    if (this.run.state === "planned") {
      await this.sweepLeakedSnapshots(sourceBlob).catch((err) => {
        throw new Error(
          describeStorageError(
            err,
            `disk ${this.disk.id} (${this.source.url})`,
            "Storage Blob Data Contributor",
          ),
        );
      });
      const snapshot = await adoptOrTakeSnapshot(
        clients.container(this.source),
        sourceBlob,
        this.source.blob,
        this.disk.id,
        this.run.id,
        this.policy,
      ).catch((err) => {
        throw new Error(
          describeStorageError(
            err,
            `disk ${this.disk.id} (${this.source.url})`,
            "Storage Blob Data Contributor",
          ),
        );
      });
      const props = await withRetry(this.policy, () => sourceBlob.withSnapshot(snapshot).getProperties());
      await this.tracker.update({
        sourceSnapshot: snapshot,
        sourceSize: props.contentLength ?? 0,
        state: "copying",
      });
      log.info(
        `run ${this.run.id}: snapshot ${snapshot} of disk ${this.disk.id} (${props.contentLength} bytes)`,
      );
    }
    // A fanned-out run whose plan is complete is sealed by whoever records its last batch.
    if (this.run.state === "copying" && this.run.planComplete !== "yes") await this.copy();
    if (this.run.state === "sealing") await this.seal();
    if (this.run.state === "succeeded") {
      await this.cleanUpAfterSeal(sourceBlob);
      const hooks = this.deps.hooks;
      await callHook(this.deps, "afterSeal", () => hooks?.afterSeal?.(this.deps, this.disk, this.run));
      await callHook(this.deps, "runEnded", () => hooks?.runEnded?.(this.run, this.disk));
    }
    return this.run;
  }

  /** Deletes this disk's tagged source snapshots that are neither the base nor this run's. */
  private async sweepLeakedSnapshots(sourceBlob: PageBlobClient): Promise<void> {
    const keep = new Set([this.disk.baseSnapshot, this.run.sourceSnapshot].filter(Boolean));
    const tagged = await listTaggedSnapshots(
      this.deps.clients.container(this.source),
      this.source.blob,
      this.disk.id,
      this.policy,
    );
    for (const s of tagged) {
      if (keep.has(s.snapshot) || s.runId === this.run.id) continue;
      const owner = await this.deps.lineage.getRun(this.disk.id, s.runId);
      if (owner && !TERMINAL_STATES.includes(owner.state) && owner.id !== this.run.id) continue;
      this.deps.log.info(`deleting leaked snapshot ${s.snapshot} of disk ${this.disk.id} (run ${s.runId})`);
      await deleteSnapshot(sourceBlob, s.snapshot, this.policy);
    }
  }

  /** Makes the backup blob exist with the source snapshot's size; returns whether it already held data. */
  private async prepareBackupBlob(size: number): Promise<boolean> {
    const { clients } = this.deps;
    const blob = clients.pageBlob(this.backup);
    const resource = `backup blob ${this.backup.url}`;
    try {
      await withRetry(this.policy, () => clients.container(this.backup).createIfNotExists());
      let existing: number | undefined;
      try {
        existing = (await withRetry(this.policy, () => blob.getProperties())).contentLength;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      if (existing === undefined) {
        await withRetry(this.policy, () => blob.create(size));
        return false;
      }
      if (existing !== size) {
        this.deps.log.info(`resizing ${resource} from ${existing} to ${size} bytes`);
        await withRetry(this.policy, () => blob.resize(size));
      }
      return true;
    } catch (err) {
      throw new Error(describeStorageError(err, resource, "Storage Blob Data Contributor"));
    }
  }

  /**
   * Makes the backup blob this run's before the first write: its sequence number becomes the
   * run's fence (recorded on the run; a run taken over keeps its fence). The fence is above the
   * blob's current number, so every earlier run's fence is now stale and a straggling write of one
   * is refused (412 SequenceNumberConditionNotMet) rather than landing over this run's bytes.
   */
  private async fenceBackupBlob(): Promise<number> {
    if (this.run.fence !== undefined) return this.run.fence;
    const blob = this.deps.clients.pageBlob(this.backup);
    const current = (await withRetry(this.policy, () => blob.getProperties())).blobSequenceNumber ?? 0;
    const fence = Math.max(this.now().getTime(), current + 1);
    await withRetry(this.policy, () => blob.updateSequenceNumber("update", fence));
    await this.tracker.update({ fence });
    return fence;
  }

  private async chooseDetection(backupHadData: boolean): Promise<{ detection: Detection; reason?: string }> {
    if (this.run.detection) return { detection: this.run.detection };
    if (!this.disk.baseSnapshot) {
      // A first copy onto an empty blob needs only the source's valid ranges; onto a blob that
      // already holds data (an earlier failed first run) a compare writes only what is missing.
      return backupHadData
        ? { detection: "compare", reason: "the backup blob already holds data from an unfinished first run" }
        : { detection: "valid-ranges" };
    }
    if (this.deps.config.diffMode === "compare") {
      return { detection: "compare", reason: "DISKDELTA_DIFF_MODE=compare" };
    }
    return { detection: "service-diff" };
  }

  private async detect(
    detection: Detection,
    segment: { start: number; end: number },
    source: PageBlobClient,
    backup: PageBlobClient,
  ): Promise<ChangeSet> {
    switch (detection) {
      case "valid-ranges":
        return { writes: await validRangesSegment(source, segment, this.policy), clears: [] };
      case "compare":
        return compareSegment(source, backup, segment, this.policy, this.deps.config.copyConcurrency);
      case "service-diff":
        if (!this.run.baseSnapshot) throw new Error("service diff without a base");
        return serviceDiffSegment(source, this.run.baseSnapshot, segment, this.policy);
    }
  }

  private async copy(): Promise<void> {
    const { config, clients, log } = this.deps;
    const size = this.run.sourceSize ?? 0;
    const snapshot = this.run.sourceSnapshot;
    if (!snapshot) throw new Error(`run ${this.run.id} is copying without a source snapshot`);
    const backupHadData = await this.prepareBackupBlob(size);
    const chosen = await this.chooseDetection(backupHadData);
    let detection = chosen.detection;
    if (detection !== this.run.detection) {
      await this.tracker.update({ detection, reason: chosen.reason ?? this.run.reason, ...this.counters() });
    }
    const fence = await this.fenceBackupBlob();
    const copier = new PageCopier(
      clients,
      { location: this.source, snapshot },
      clients.pageBlob(this.backup),
      this.policy,
      config.copyMode,
      fence,
    );
    const start = this.run.checkpoint ?? 0;
    let lastCheckpoint = Date.now();
    if (start > 0) log.info(`run ${this.run.id}: resuming at byte ${start} of ${size}`);
    const fanout = this.options.fanout;
    let nextBatch = this.run.batchesTotal ?? 0;
    let generation = 0;
    if (fanout) {
      // Every planning invocation is a new generation: batches a dead planner sent past its last
      // checkpoint are then told apart from this one's (and not counted), even if numbered alike.
      generation = (this.run.planGeneration ?? 0) + 1;
      await this.tracker.update({ planGeneration: generation, generationStart: nextBatch });
    }
    for (const segment of segments(size, config.segmentBytes)) {
      if (segment.end <= start) continue;
      if (fanout && Date.now() >= fanout.deadline && segment.start > start) {
        await this.tracker.update({
          checkpoint: segment.start,
          batchesTotal: nextBatch,
          owner: fanout.pauseOwner,
          ...this.counters(),
        });
        log.info(
          `run ${this.run.id}: planning paused at byte ${segment.start} of ${size}; it continues in a new invocation`,
        );
        return;
      }
      this.report("copying", segment.start);
      let changes: ChangeSet;
      try {
        changes = await this.detect(detection, segment, copier.source, copier.backup);
      } catch (err) {
        if (detection !== "service-diff" || !isDiffRefusal(err)) throw err;
        const code = errorInfo(err).code;
        log.warn(`run ${this.run.id}: the service refused the diff (${code}); resyncing by compare`);
        detection = "compare";
        await this.tracker.update({
          detection,
          kind: "resync",
          reason: `the service refused the diff: ${code}`,
        });
        changes = await this.detect(detection, segment, copier.source, copier.backup);
      }
      if (detection === "service-diff" && config.diffMode === "auto" && answersDiffsWrongly(changes.server)) {
        // The answer came from an endpoint that ignores `prevsnapshot` (Azurite#812): no cleared
        // ranges, every valid page listed. Never trust it; compare instead.
        log.info(`run ${this.run.id}: ${changes.server} answers page-range diffs wrongly; comparing instead`);
        detection = "compare";
        await this.tracker.update({
          detection,
          reason: `the endpoint (${changes.server}) answers page-range diffs wrongly`,
        });
        changes = await this.detect(detection, segment, copier.source, copier.backup);
      }
      this.stats.rangesWritten += changes.writes.length;
      this.stats.rangesCleared += changes.clears.length;
      this.stats.bytesPlanned += totalBytes(changes.writes);
      // Await first, then add: `x += await f()` reads x before the await and loses parallel updates.
      const cleared = await copier.clear(changes.clears);
      this.stats.bytesCleared += cleared;
      if (fanout && (this.run.mode === "fanout" || this.stats.bytesPlanned > fanout.thresholdBytes)) {
        if (this.run.mode !== "fanout") {
          log.info(
            `run ${this.run.id}: ${this.stats.bytesPlanned} bytes to copy: fanning out to queue workers`,
          );
          await this.tracker.update({ mode: "fanout" });
        }
        for (const batch of batchesOf(chunksOf(changes.writes), fanout.batchChunks)) {
          await fanout.send({ batch: nextBatch, generation, chunks: batch });
          nextBatch += 1;
          this.stats.chunksTotal += batch.length;
        }
      } else {
        // Chunks are pulled lazily: only the in-flight ones (concurrency × ≤ 4 MiB) exist at once.
        const chunks = chunksOf(changes.writes);
        await forEachBounded(chunks, config.copyConcurrency, async (chunk) => {
          this.stats.chunksTotal += 1;
          const copied = await copier.copyChunk(chunk);
          this.stats.bytesCopied += copied;
          this.stats.chunksDone += 1;
          this.report("copying", Math.min(segment.end, (chunk.index + 1) * 4 * 1024 * 1024));
        });
      }
      // Checkpoint after every segment that changed something, and otherwise every few seconds:
      // a sparse 1 TiB disk is 8192 segments, and a table write for each empty one costs more
      // than re-listing them after a crash.
      const changed = changes.writes.length + changes.clears.length > 0;
      if (changed || Date.now() - lastCheckpoint >= CHECKPOINT_IDLE_MS || segment.end === size) {
        await this.tracker.update({
          checkpoint: segment.end,
          batchesTotal: fanout ? nextBatch : undefined,
          ...this.counters(),
        });
        lastCheckpoint = Date.now();
      }
    }
    if (this.run.mode === "fanout") {
      // The queue workers copy the rest; the one that records the last batch seals.
      await this.tracker.update({
        checkpoint: size,
        batchesTotal: nextBatch,
        planComplete: "yes",
        ...this.counters(),
      });
      return;
    }
    this.report("sealing", size);
    await this.tracker.update({ state: "sealing", ...this.counters() });
  }

  private async seal(): Promise<void> {
    const { clients, lineage, log } = this.deps;
    const backupBlob = clients.pageBlob(this.backup);
    let backupSnapshot = this.run.backupSnapshot;
    if (!backupSnapshot) {
      backupSnapshot = await adoptOrTakeSnapshot(
        clients.container(this.backup),
        backupBlob,
        this.backup.blob,
        this.disk.id,
        this.run.id,
        this.policy,
      );
      await this.tracker.update({ backupSnapshot });
    }
    const pointId = pointIdOf(this.run.id);
    if (!(await lineage.getPoint(this.disk.id, pointId))) {
      await lineage.addPoint({
        id: pointId,
        diskId: this.disk.id,
        runId: this.run.id,
        kind: this.run.kind,
        backupSnapshot,
        backupUrl: this.backup.url,
        sourceSnapshot: this.run.sourceSnapshot ?? "",
        size: this.run.sourceSize ?? 0,
        createdAt: this.now().toISOString(),
      });
    }
    await this.tracker.update({
      state: "succeeded",
      restorePoint: pointId,
      finishedAt: this.now().toISOString(),
      ...this.counters(),
    });
    log.info(`run ${this.run.id}: sealed restore point ${pointId} (backup snapshot ${backupSnapshot})`);
  }

  /** Points the disk at the new base, releases it, then (only then) deletes the old base. */
  private async cleanUpAfterSeal(sourceBlob: PageBlobClient): Promise<void> {
    const { lineage, log } = this.deps;
    const previousBase = this.disk.baseSnapshot;
    for (let pass = 0; ; pass++) {
      const disk = await lineage.getDisk(this.disk.id);
      if (!disk) throw new Error(`disk ${this.disk.id} disappeared from the lineage`);
      if (disk.baseSnapshot === this.run.sourceSnapshot && disk.activeRunId !== this.run.id) {
        this.disk = disk;
        break;
      }
      try {
        this.disk = await lineage.updateDisk(advancedDisk(disk, this.run));
        break;
      } catch (err) {
        if (pass >= 5) throw err;
      }
    }
    if (previousBase && previousBase !== this.run.sourceSnapshot) {
      try {
        await deleteSnapshot(sourceBlob, previousBase, this.policy);
      } catch (err) {
        // The restore point is sealed; a snapshot that could not be deleted now is swept by the next run.
        log.warn(`could not delete the old base ${previousBase}: ${errorInfo(err).message}`);
      }
    }
  }

  async fail(err: unknown): Promise<void> {
    const { log } = this.deps;
    const message = errorInfo(err).message;
    log.error(`run ${this.run.id} of disk ${this.disk.id} failed: ${message}`);
    const before = this.run;
    try {
      await this.tracker.update({
        state: "failed",
        error: message,
        finishedAt: this.now().toISOString(),
        ...this.counters(),
      });
      await cleanUpFailedRun(this.deps, this.disk, before, this.policy);
    } catch (updateError) {
      log.warn(
        `run ${this.run.id}: cleanup after the failure was incomplete (${errorInfo(updateError).message}); the next run finishes it`,
      );
    }
    await callHook(this.deps, "runEnded", () => this.deps.hooks?.runEnded?.(this.run, this.disk));
  }
}
