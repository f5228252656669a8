/**
 * `diskdelta worker`: extra queue workers in this process, on the same storage as `npm start`
 * (scale-out on one machine, as more Functions instances would be), with the host's delivery
 * rules. With --json, stdout holds only the one ready line `{ pid, queues }`; the log goes to stderr.
 */
import { InputError } from "../../core/errors";
import { openEngine } from "../../compose";
import { useApp } from "../../compose/runtime";
import { discoverFunctions } from "../../host/discover";
import { startHost } from "../../host/host";
import { consoleLogger, leaseOption, untilSignal } from "../../host/process";
import { MAX_BATCH_SIZE } from "../../host/settings";
import { printLine, type GlobalOptions } from "../output";

interface WorkerOptions {
  queues?: string;
  concurrency?: string;
  leaseSeconds?: string;
}

/**
 * --concurrency n caps the messages of one queue processed at once: a batch of up to 32 (the
 * queue service's limit per fetch), and the rest as newBatchThreshold, since the host fetches a
 * new batch when the running ones drop to it (in flight ≤ batchSize + newBatchThreshold).
 */
export function concurrencyOverrides(n: number): { batchSize: number; newBatchThreshold: number } {
  const batchSize = Math.min(n, MAX_BATCH_SIZE);
  return { batchSize, newBatchThreshold: n - batchSize };
}

export async function workerCommand(opts: GlobalOptions, o: WorkerOptions): Promise<void> {
  const problems: string[] = [];
  let concurrency: number | undefined;
  if (o.concurrency !== undefined) {
    concurrency = Number(o.concurrency);
    if (!/^\d+$/.test(o.concurrency) || concurrency <= 0)
      problems.push(`--concurrency ${o.concurrency} is not a positive whole number`);
  }
  let leaseMs: number | undefined;
  try {
    leaseMs = leaseOption(o.leaseSeconds);
  } catch (err) {
    problems.push((err as Error).message);
  }
  const queues = o.queues
    ?.split(",")
    .map((q) => q.trim())
    .filter(Boolean);
  if (o.queues !== undefined && !queues?.length) problems.push("--queues names no queue");
  if (problems.length) throw new InputError(problems);

  const log = consoleLogger(Boolean(opts.verbose), Boolean(opts.json));
  const specs = discoverFunctions(log);
  const known = [...new Set(specs.flatMap((s) => (s.kind === "queue" ? [s.queueName] : [])))];
  const unknown = (queues ?? []).filter((q) => !known.includes(q));
  if (unknown.length)
    throw new InputError([
      `no queue function listens on ${unknown.join(", ")}; the app's queues are ${known.join(", ") || "(none: build first)"}`,
    ]);

  const engine = await openEngine(log, process.env, { role: "worker" });
  try {
    useApp(engine);
    const host = await startHost(specs, {
      log,
      queueFor: (name) => engine.queueClient(name),
      triggers: { http: false, timer: false, queue: true },
      queues,
      queue: { ...(concurrency ? concurrencyOverrides(concurrency) : {}), ...(leaseMs ? { leaseMs } : {}) },
    });
    const served = host.queue?.queues ?? [];
    if (opts.json) printLine({ pid: process.pid, queues: served });
    else log.info(`worker ${process.pid} serving ${served.join(", ") || "no queues"}; Ctrl+C to stop`);
    await untilSignal(log);
    await host.stop();
    log.info("worker stopped");
  } finally {
    useApp(undefined);
    await engine.close();
  }
}
