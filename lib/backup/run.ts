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
import type { StorageClients } from "../azure/clients";
import { describeStorageError, errorInfo, isDiffRefusal, isNotFound } from "../azure/errors";
import { withRetry, type RetryPolicy } from "../azure/retry";
import { blobLocation, parseAccountUrl, parseBlobUrl, type BlobLocation } from "../azure/urls";
import { forEachBounded } from "../concurrency";
import { PageCopier } from "../copy";
import { compareSegment, serviceDiffSegment, validRangesSegment, type ChangeSet } from "../diff";
import {
  TERMINAL_STATES,
  type Detection,
  type DiskRecord,
  type Lineage,
  type RunRecord,
  type RunTrigger,
} from "../lineage/types";
import { chunksOf, segments, totalBytes } from "../ranges";
import { advancedDisk, claimRun, ownerId, releaseClaim } from "./claim";
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

export interface BackupOptions {
  trigger: RunTrigger;
  onProgress?: (progress: Progress) => void;
}

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
  const tracker = new RunTracker(lineage, claim.run, config.leaseSeconds, now);
  const execution = new Execution(deps, claim.disk, tracker, options, now);
  tracker.startHeartbeat(() => execution.counters());
  try {
    return await execution.execute();
  } catch (err) {
    if (err instanceof LostRunError) throw err;
    await execution.fail(err);
    throw err;
  } finally {
    tracker.stop();
  }
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
    if (this.run.state === "copying") await this.copy();
    if (this.run.state === "sealing") await this.seal();
    await this.cleanUpAfterSeal(sourceBlob);
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
    const copier = new PageCopier(
      clients,
      { location: this.source, snapshot },
      clients.pageBlob(this.backup),
      this.policy,
      config.copyMode,
    );
    const start = this.run.checkpoint ?? 0;
    let lastCheckpoint = Date.now();
    if (start > 0) log.info(`run ${this.run.id}: resuming at byte ${start} of ${size}`);
    for (const segment of segments(size, config.segmentBytes)) {
      if (segment.end <= start) continue;
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
      // Chunks are pulled lazily: only the in-flight ones (concurrency × ≤ 4 MiB) exist at once.
      const chunks = chunksOf(changes.writes);
      await forEachBounded(chunks, config.copyConcurrency, async (chunk) => {
        this.stats.chunksTotal += 1;
        const copied = await copier.copyChunk(chunk);
        this.stats.bytesCopied += copied;
        this.stats.chunksDone += 1;
        this.report("copying", Math.min(segment.end, (chunk.index + 1) * 4 * 1024 * 1024));
      });
      // Checkpoint after every segment that changed something, and otherwise every few seconds:
      // a sparse 1 TiB disk is 8192 segments, and a table write for each empty one costs more
      // than re-listing them after a crash.
      const changed = changes.writes.length + changes.clears.length > 0;
      if (changed || Date.now() - lastCheckpoint >= CHECKPOINT_IDLE_MS || segment.end === size) {
        await this.tracker.update({ checkpoint: segment.end, ...this.counters() });
        lastCheckpoint = Date.now();
      }
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
    const pointId = this.run.id.replace(/^r-/, "p-");
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
    const { lineage, clients, log } = this.deps;
    const message = errorInfo(err).message;
    log.error(`run ${this.run.id} of disk ${this.disk.id} failed: ${message}`);
    try {
      await this.tracker.update({
        state: "failed",
        error: message,
        finishedAt: this.now().toISOString(),
        ...this.counters(),
      });
      await releaseClaim(lineage, this.disk.id, this.run.id);
      const snapshot = this.run.sourceSnapshot;
      if (snapshot && snapshot !== this.disk.baseSnapshot) {
        await deleteSnapshot(clients.pageBlob(this.source), snapshot, this.policy);
      }
    } catch (cleanupError) {
      log.warn(
        `run ${this.run.id}: cleanup after the failure was incomplete (${errorInfo(cleanupError).message}); the next run finishes it`,
      );
    }
  }
}
