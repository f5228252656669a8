/**
 * `diskdelta worker`: one more process running only the app's queue triggers, on the same storage
 * as `npm start` — scale-out on one machine, the way the Functions host adds instances. Guarantees:
 * it delivers with the same rules as the host (host.json: batch, retry delay, dequeue count,
 * poison queue), so any number of workers and the host share the queues without losing or
 * doubling work beyond at-least-once; on the embedded default it uses the running host's storage
 * (embedded.ts lets a second process reuse the first one's servers); it stops on SIGINT/SIGTERM
 * after finishing the invocations under way. Registered by main.ts through
 * `registerWorkerCommand`, so this file owns the command's whole CLI surface.
 */
import type { Command } from "commander";
import { InputError } from "../backup/disks";
import { appFromEngine, useApp } from "../app/runtime";
import { openEngine } from "../engine";
import { discoverFunctions } from "../host/discover";
import { startHost } from "../host/host";
import { consoleLogger, leaseOption, untilSignal } from "../host/process";
import { MAX_BATCH_SIZE } from "../host/settings";

interface GlobalOptions {
  json?: boolean;
  verbose?: boolean;
}

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

export function registerWorkerCommand(program: Command, globals: () => GlobalOptions): void {
  program
    .command("worker")
    .description(
      "run extra queue workers in this process, on the same storage as 'npm start' (scale-out on one machine)",
    )
    .option("--queues <names>", "comma-separated queues to serve (default: every queue the app listens on)")
    .option(
      "--concurrency <n>",
      "messages of one queue processed at once (default: host.json's batchSize + newBatchThreshold)",
    )
    .option(
      "--lease-seconds <n>",
      "how long a message stays invisible while processed, renewed while it runs; a killed worker's messages return after this (default 600, the Functions host's)",
    )
    .action(async (o: WorkerOptions) => {
      const problems: string[] = [];
      let concurrency: number | undefined;
      if (o.concurrency !== undefined) {
        concurrency = Number(o.concurrency);
        if (!Number.isSafeInteger(concurrency) || concurrency <= 0)
          problems.push(`--concurrency ${o.concurrency} is not a positive integer`);
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

      const log = consoleLogger(Boolean(globals().verbose));
      const specs = discoverFunctions(log);
      const known = [...new Set(specs.flatMap((s) => (s.kind === "queue" ? [s.queueName] : [])))];
      const unknown = (queues ?? []).filter((q) => !known.includes(q));
      if (unknown.length)
        throw new InputError([
          `no queue function listens on ${unknown.join(", ")}; the app's queues are ${known.join(", ") || "(none: build first)"}`,
        ]);

      const engine = await openEngine(log);
      try {
        useApp(appFromEngine(engine));
        const host = await startHost(specs, {
          log,
          queueFor: (name) => engine.clients.queue(name),
          triggers: { http: false, timer: false, queue: true },
          queues,
          queue: {
            ...(concurrency ? concurrencyOverrides(concurrency) : {}),
            ...(leaseMs ? { leaseMs } : {}),
          },
        });
        const served = host.queue?.queues ?? [];
        if (globals().json) process.stdout.write(`${JSON.stringify({ pid: process.pid, queues: served })}\n`);
        else log.info(`worker ${process.pid} serving ${served.join(", ") || "no queues"}; Ctrl+C to stop`);
        if (engine.embedded && !engine.embedded.serving)
          log.info("on the embedded storage of the running host (npm start); it must keep running");
        await untilSignal(log);
        await host.stop();
        log.info("worker stopped");
      } finally {
        useApp(undefined);
        await engine.close();
      }
    });
}
