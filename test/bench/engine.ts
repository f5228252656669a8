/**
 * The bench's one door into the engine: every use of diskdelta's library API by test/bench is in
 * this file, behind a narrow interface of plain data, so that when lib/ is restructured only this
 * file is re-pointed. What it promises the bench:
 *
 * - `openBenchEngine(env)` opens the engine as the CLI does (lineage tables ready), from an
 *   environment of AzureWebJobsStorage, STORAGE_ACCOUNT_KEYS and DISKDELTA_* settings;
 * - `register` adds a disk (source page blob URL, backup account URL) and says where its backup
 *   blob is;
 * - `backup` runs one backup to its end in this process, as `diskdelta backup` does, and times the
 *   run apart from the after-seal work (digests of the new point, retention), which the `phases`
 *   callbacks bracket so the caller can count that work's requests apart too;
 * - `fanout` runs one backup the way the app does when a change set is large: the backup-requests
 *   handler plans and sends chunk messages, then each message is handed to the chunk handler (in
 *   the order sent, one at a time, once each) until the run seals; it reports how many chunks each
 *   message carried. Messages are also really sent to the app's queue, so queue requests count.
 */
import { handleBackupRequest, handleChunkMessage, requestBackup } from "../../lib/app/backups";
import type { App } from "../../lib/app/context";
import { backupDisk, type RunHooks } from "../../lib/backup/run";
import { openEngine, type Engine } from "../../lib/compose";
import { silentLogger, type Logger } from "../../lib/core/logger";
import { addDisk } from "../../lib/disks/register";
import type { RunRecord } from "../../lib/lineage/types";
import { decodeBackupRequest, decodeChunkMessage, QUEUES } from "../../lib/queues/messages";

/** Opaque to the bench. */
export type BenchEngine = Engine;

/** The settings the bench prints, as the engine resolved them. */
export interface BenchSettings {
  copyConcurrency: number;
  segmentBytes: number;
  batchChunks: number;
  fanoutBytes: number;
  copyMode: string;
  diffMode: string;
}

/** What the bench reads of a finished run. */
export interface BenchRun {
  id: string;
  state: string;
  kind: string;
  detection?: string;
  reason?: string;
  error?: string;
  bytesCopied: number;
  bytesCleared: number;
  chunksTotal: number;
  rangesWritten: number;
  rangesCleared: number;
  sourceSnapshot?: string;
  /** The restore point's snapshot of the backup blob. */
  backupSnapshot?: string;
}

/** Called around the after-seal hook; the time spent in them is in neither figure. */
export interface BackupPhases {
  afterSealStarts?(): Promise<void>;
  afterSealEnded?(): Promise<void>;
}

export interface BackupTiming {
  run: BenchRun;
  /** The run without the after-seal hook. */
  seconds: number;
  afterSealSeconds: number;
}

const stderrLogger: Logger = {
  info: (m) => process.stderr.write(`  [engine] ${m}\n`),
  warn: (m) => process.stderr.write(`  [engine] warn: ${m}\n`),
  error: (m) => process.stderr.write(`  [engine] error: ${m}\n`),
};

export function openBenchEngine(env: Record<string, string>, verbose = false): Promise<BenchEngine> {
  return openEngine(verbose ? stderrLogger : silentLogger, env);
}

export function closeBenchEngine(engine: BenchEngine): Promise<void> {
  return engine.close();
}

export function settings(engine: BenchEngine): BenchSettings {
  const c = engine.config;
  return {
    copyConcurrency: c.copyConcurrency,
    segmentBytes: c.segmentBytes,
    batchChunks: c.batchChunks,
    fanoutBytes: c.fanoutBytes,
    copyMode: c.copyMode,
    diffMode: c.diffMode,
  };
}

export async function register(
  engine: BenchEngine,
  id: string,
  sourceUrl: string,
  backupAccountUrl: string,
): Promise<{ container: string; blob: string }> {
  const disk = await addDisk(engine, { id, source: sourceUrl, backupAccount: backupAccountUrl });
  return { container: disk.backupContainer, blob: disk.backupBlob };
}

function benchRun(r: RunRecord): BenchRun {
  return {
    id: r.id,
    state: r.state,
    kind: r.kind,
    detection: r.detection,
    reason: r.reason,
    error: r.error,
    bytesCopied: r.bytesCopied,
    bytesCleared: r.bytesCleared,
    chunksTotal: r.chunksTotal,
    rangesWritten: r.rangesWritten,
    rangesCleared: r.rangesCleared,
    sourceSnapshot: r.sourceSnapshot,
    backupSnapshot: r.backupSnapshot,
  };
}

/** The engine with its after-seal hook timed and bracketed; `timing.pausedSeconds` is the callbacks' own time. */
function timedHooks(engine: BenchEngine, phases: BackupPhases | undefined) {
  const timing = { afterSealSeconds: 0, pausedSeconds: 0 };
  const hooks = engine.hooks;
  const paused = async (call: (() => Promise<void>) | undefined) => {
    const started = performance.now();
    await call?.();
    timing.pausedSeconds += (performance.now() - started) / 1000;
  };
  const afterSeal: RunHooks["afterSeal"] = async (...args) => {
    await paused(phases?.afterSealStarts);
    const started = performance.now();
    try {
      await hooks?.afterSeal?.(...args);
    } finally {
      timing.afterSealSeconds += (performance.now() - started) / 1000;
      await paused(phases?.afterSealEnded);
    }
  };
  return { engine: { ...engine, hooks: { ...hooks, afterSeal } }, timing };
}

export async function backup(engine: BenchEngine, id: string, phases?: BackupPhases): Promise<BackupTiming> {
  const { engine: deps, timing } = timedHooks(engine, phases);
  const started = performance.now();
  const run = await backupDisk(deps, id, { trigger: "cli" });
  const total = (performance.now() - started) / 1000;
  // A run that found nothing changed ends "unchanged" (no new point): a success too.
  if (run.state !== "succeeded" && run.state !== "unchanged")
    throw new Error(`backup of ${id} ended ${run.state}: ${run.error}`);
  return {
    run: benchRun(run),
    seconds: total - timing.afterSealSeconds - timing.pausedSeconds,
    afterSealSeconds: timing.afterSealSeconds,
  };
}

export interface FanoutResult {
  /** Chunks in each chunk message, in the order sent. */
  messages: number[];
  run: BenchRun;
  /** From the request to the seal, after-seal hook included. */
  seconds: number;
}

export async function fanout(engine: BenchEngine, id: string): Promise<FanoutResult> {
  const base: App = engine;
  const pending: { queue: string; body: object }[] = [];
  const messages: number[] = [];
  const app: App = {
    ...base,
    queues: {
      send: async (queue, body, options) => {
        await base.queues.send(queue, body, options);
        pending.push({ queue, body });
        if (queue === QUEUES.chunks) messages.push(decodeChunkMessage(body).chunks.length);
      },
    },
  };
  const started = performance.now();
  const requested = await requestBackup(app, id, "http");
  for (let next = pending.shift(); next; next = pending.shift()) {
    if (next.queue === QUEUES.backupRequests) await handleBackupRequest(app, decodeBackupRequest(next.body));
    else if (next.queue === QUEUES.chunks) await handleChunkMessage(app, decodeChunkMessage(next.body));
  }
  const seconds = (performance.now() - started) / 1000;
  const run = await engine.lineage.getRun(id, requested.id);
  if (!run || run.state !== "succeeded") {
    throw new Error(`fanned-out backup of ${id} ended ${run?.state ?? "without a run"}: ${run?.error}`);
  }
  return { messages, run: benchRun(run), seconds };
}
