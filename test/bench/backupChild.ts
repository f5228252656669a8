/**
 * Runs one backup of one registered disk in a process of its own and prints one JSON line with the
 * run's counters and this process's memory: RSS after loading the engine (the baseline), the peak
 * sampled during the run, and the kernel's high-water mark. The benchmark spawns it so that the
 * engine's memory is measured without the in-process Azurite that serves the data, which holds
 * every blob in memory and would dominate any RSS taken in the benchmark's own process.
 *
 * Spawned with --expose-gc: one forced collection before the run and one after it tell the memory the
 * engine retains apart from garbage not yet collected, without disturbing the peak in between.
 *
 * Input: BENCH_CHILD (JSON: { engineEnv, diskId }) in the environment, since the engine
 * environment holds account keys and must not appear on a command line.
 */
import { backupDisk } from "../../lib/backup/run";
import { silentLogger } from "../../lib/core/logger";
import { openEngine } from "../../lib/compose";
import { maxRssMiB, MiB, rssMiB, RssSampler } from "./rss";

export interface ChildInput {
  engineEnv: Record<string, string>;
  diskId: string;
}

export interface ChildResult {
  seconds: number;
  copyConcurrency: number;
  segmentBytes: number;
  /** RSS right after the modules loaded, before the engine opened, MiB. */
  rssAtLoadMiB: number;
  /** RSS with the engine open, just before the backup, MiB. */
  rssBeforeMiB: number;
  peakRssMiB: number;
  peakHeapAndBuffersMiB: number;
  /** heapUsed + external after a forced collection, before and after the run, MiB. */
  liveBeforeMiB: number;
  liveAfterMiB: number;
  /** VmHWM: the kernel's high-water mark of this process's own address space, MiB. */
  maxRssMiB: number;
  /** process.resourceUsage().maxRSS, MiB: on Linux it includes the parent's RSS at the fork. */
  resourceMaxRssMiB: number;
  run: {
    state: string;
    kind: string;
    detection?: string;
    bytesCopied: number;
    bytesCleared: number;
    chunksTotal: number;
    rangesWritten: number;
    rangesCleared: number;
  };
}

/** JS heap and Buffers still reachable: collects first when the process was started with --expose-gc. */
function liveMiB(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const m = process.memoryUsage();
  return (m.heapUsed + m.external) / MiB;
}

async function main(): Promise<void> {
  const rssAtLoadMiB = rssMiB();
  const raw = process.env.BENCH_CHILD;
  if (!raw) throw new Error("BENCH_CHILD is not set: this script is spawned by test/bench/bench.ts");
  const input = JSON.parse(raw) as ChildInput;
  const engine = await openEngine(silentLogger, input.engineEnv);
  try {
    const liveBeforeMiB = liveMiB();
    const sampler = new RssSampler();
    const rssBeforeMiB = rssMiB();
    const started = performance.now();
    const run = await backupDisk(engine, input.diskId, { trigger: "cli" });
    const seconds = (performance.now() - started) / 1000;
    const peak = sampler.stop();
    const liveAfterMiB = liveMiB();
    const result: ChildResult = {
      seconds,
      copyConcurrency: engine.config.copyConcurrency,
      segmentBytes: engine.config.segmentBytes,
      rssAtLoadMiB,
      rssBeforeMiB,
      peakRssMiB: peak.peakMiB,
      peakHeapAndBuffersMiB: peak.peakHeapAndBuffersMiB,
      liveBeforeMiB,
      liveAfterMiB,
      maxRssMiB: maxRssMiB(),
      resourceMaxRssMiB: process.resourceUsage().maxRSS / 1024,
      run: {
        state: run.state,
        kind: run.kind,
        detection: run.detection,
        bytesCopied: run.bytesCopied,
        bytesCleared: run.bytesCleared,
        chunksTotal: run.chunksTotal,
        rangesWritten: run.rangesWritten,
        rangesCleared: run.rangesCleared,
      },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await engine.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`backupChild: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
