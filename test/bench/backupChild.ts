/**
 * Runs one backup — the engine's, as `diskdelta backup` does (through test/bench/engine.ts), or
 * the plain SDK loop's (test/bench/plain.ts) — in a process of its own, so both contenders run
 * under the same conditions: alone on their event loop, storage in another process, the same
 * proxy path. The same process is the CLI-like engine process whose memory the bench reports:
 * RSS after loading the modules, the peak sampled during the run, and the kernel's high-water
 * mark (VmHWM) of this process.
 *
 * Forked by test/bench/processes.ts with --expose-gc and an IPC channel; input BENCH_CHILD (JSON
 * ChildInput) in the environment, since it holds account keys. Protocol: the child prepares
 * (opens the engine, registers disks, warms up), sends { type: "ready" } and waits for "go", so
 * the parent can mark the storage request counts exactly where the timed run starts; around the
 * engine's after-seal hook it sends { type: "phase" } and waits for "ack" (marks again); at the
 * end it sends { type: "result", result } and exits.
 */
import type { BenchRun, BenchSettings } from "./engine";
import type { PlainInput, PlainResult } from "./plain";
import { maxRssMiB, MiB, resetMaxRss, rssMiB, RssSampler } from "./rss";

export interface Registration {
  id: string;
  sourceUrl: string;
  backupAccountUrl: string;
}

export type ChildInput =
  | {
      contender: "engine";
      op: "backup" | "fanout";
      engineEnv: Record<string, string>;
      diskId: string;
      /** Disks to register first (not timed, not counted). */
      register?: Registration[];
      /** A disk to back up first, so JIT and connections are warm for the timed run. */
      warmup?: string;
      verbose?: boolean;
    }
  | {
      contender: "plain";
      input: PlainInput;
      /** A first backup of a small disk to run first, for the same reason. */
      warmup?: PlainInput;
    };

export interface Memory {
  /** RSS right after the modules loaded, MiB. */
  rssAtLoadMiB: number;
  /** RSS just before the timed run (engine open, warm-up done), MiB. */
  rssBeforeMiB: number;
  peakRssMiB: number;
  peakHeapAndBuffersMiB: number;
  /** heapUsed + external after a forced collection, before and after the run, MiB. */
  liveBeforeMiB: number;
  liveAfterMiB: number;
  /**
   * VmHWM: the kernel's high-water mark of this process's own address space, MiB; reset to the
   * RSS just before the timed run when `maxRssReset` (so the warm-up's peak is not in it).
   */
  maxRssMiB: number;
  maxRssReset: boolean;
}

export interface ChildResult {
  contender: "engine" | "plain";
  /** The run without the engine's after-seal hook. */
  seconds: number;
  afterSealSeconds: number;
  bytesCopied: number;
  bytesCleared: number;
  sourceSnapshot?: string;
  backupSnapshot?: string;
  memory: Memory;
  run?: BenchRun;
  settings?: BenchSettings;
  /** Fan-out: chunks per chunk message, in the order sent. */
  messages?: number[];
  plain?: PlainResult;
  /** Where each disk registered here keeps its backup blob (container, blob in the backup account). */
  registered?: Record<string, { container: string; blob: string }>;
}

export type ChildMessage =
  | { type: "ready" }
  | { type: "phase"; phase: "afterSealStarts" | "afterSealEnded" }
  | { type: "result"; result: ChildResult };

/** JS heap and Buffers still reachable: collects first (the child runs with --expose-gc). */
function liveMiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return (m.heapUsed + m.external) / MiB;
}

function send(m: ChildMessage): Promise<void> {
  return new Promise((resolve, reject) =>
    process.send?.(m, undefined, undefined, (err) => (err ? reject(err) : resolve())),
  );
}

/** The parent's next message; it only ever sends "go" and "ack", each when one is awaited. */
function reply(): Promise<void> {
  return new Promise((resolve) => process.once("message", () => resolve()));
}

async function handshake(m: ChildMessage): Promise<void> {
  const answered = reply();
  await send(m);
  await answered;
}

async function main(): Promise<void> {
  const rssAtLoadMiB = rssMiB();
  const raw = process.env.BENCH_CHILD;
  if (!raw || !process.send)
    throw new Error("backupChild is forked by test/bench/bench.ts (BENCH_CHILD, IPC)");
  const input = JSON.parse(raw) as ChildInput;
  // The bench died: do not outlive it.
  process.on("disconnect", () => process.exit(1));

  let prepared: () => Promise<Omit<ChildResult, "memory">>;
  let close = async () => undefined as void;
  if (input.contender === "plain") {
    // Loaded here, not at the top: each contender's process holds its own code only.
    const { plainBackup } = await import("./plain");
    if (input.warmup) await plainBackup(input.warmup);
    prepared = async () => {
      const started = performance.now();
      const plain = await plainBackup(input.input);
      return {
        contender: "plain",
        seconds: (performance.now() - started) / 1000,
        afterSealSeconds: 0,
        bytesCopied: plain.bytesCopied,
        bytesCleared: plain.bytesCleared,
        sourceSnapshot: plain.sourceSnapshot,
        backupSnapshot: plain.backupSnapshot,
        plain,
      };
    };
  } else {
    const { backup, closeBenchEngine, fanout, openBenchEngine, register, settings } =
      await import("./engine");
    const engine = await openBenchEngine(input.engineEnv, input.verbose);
    close = () => closeBenchEngine(engine);
    const registered: Record<string, { container: string; blob: string }> = {};
    for (const r of input.register ?? []) {
      registered[r.id] = await register(engine, r.id, r.sourceUrl, r.backupAccountUrl);
    }
    if (input.warmup) await backup(engine, input.warmup);
    const common = { contender: "engine" as const, settings: settings(engine), registered };
    prepared =
      input.op === "fanout"
        ? async () => {
            const f = await fanout(engine, input.diskId);
            return {
              ...common,
              seconds: f.seconds,
              afterSealSeconds: 0,
              bytesCopied: f.run.bytesCopied,
              bytesCleared: f.run.bytesCleared,
              sourceSnapshot: f.run.sourceSnapshot,
              backupSnapshot: f.run.backupSnapshot,
              run: f.run,
              messages: f.messages,
            };
          }
        : async () => {
            const b = await backup(engine, input.diskId, {
              afterSealStarts: () => handshake({ type: "phase", phase: "afterSealStarts" }),
              afterSealEnded: () => handshake({ type: "phase", phase: "afterSealEnded" }),
            });
            return {
              ...common,
              seconds: b.seconds,
              afterSealSeconds: b.afterSealSeconds,
              bytesCopied: b.run.bytesCopied,
              bytesCleared: b.run.bytesCleared,
              sourceSnapshot: b.run.sourceSnapshot,
              backupSnapshot: b.run.backupSnapshot,
              run: b.run,
            };
          };
  }
  try {
    const liveBeforeMiB = liveMiB();
    await handshake({ type: "ready" });
    const maxRssReset = resetMaxRss();
    const rssBeforeMiB = rssMiB();
    const sampler = new RssSampler();
    const outcome = await prepared();
    const peak = sampler.stop();
    const memory: Memory = {
      rssAtLoadMiB,
      rssBeforeMiB,
      peakRssMiB: peak.peakMiB,
      peakHeapAndBuffersMiB: peak.peakHeapAndBuffersMiB,
      liveBeforeMiB,
      liveAfterMiB: liveMiB(),
      maxRssMiB: maxRssMiB(),
      maxRssReset,
    };
    await send({ type: "result", result: { ...outcome, memory } });
  } finally {
    await close();
  }
}

main()
  .then(() => process.exit(0))
  .catch((err: unknown) => {
    process.stderr.write(`backupChild: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
