/**
 * The local Functions host assembled from its triggers: given function specs and an app, it runs
 * the HTTP, timer and queue hosts with host.json's settings, and stops them in the order that
 * loses no work — no new HTTP requests, timers or queue fetches first, then it waits for every
 * invocation under way. `npm start` (main.ts) runs all three; `diskdelta worker` only the queues.
 */
import type { QueueClient } from "@azure/storage-queue";
import type { FunctionSpec, HttpFunctionSpec, QueueFunctionSpec, TimerFunctionSpec } from "../app/register";
import { HttpHost } from "./httpHost";
import type { HostLogger } from "./invocation";
import { HOST_LEASE_MS, MIN_POLLING_INTERVAL_MS, QueueHost, type QueueHostOptions } from "./queueHost";
import { readHostSettings, type HostSettings } from "./settings";
import { TimerHost } from "./timerHost";

export interface HostOptions {
  log: HostLogger;
  queueFor: (name: string) => QueueClient;
  /** Which triggers to run: all by default; a worker runs only queues. */
  triggers?: { http?: boolean; timer?: boolean; queue?: boolean };
  /** Only these queues (default: every queue function). */
  queues?: string[];
  httpPort?: number;
  /** Where timers keep their schedule status. */
  timerStatusFile?: string;
  settings?: HostSettings;
  /** Overrides of the queue rules, e.g. short timeouts in tests or a worker's --concurrency. */
  queue?: Partial<QueueHostOptions>;
  env?: NodeJS.ProcessEnv;
}

export interface RunningHost {
  /** The HTTP port actually bound (useful with port 0), when HTTP runs. */
  httpPort?: number;
  http?: HttpHost;
  timer?: TimerHost;
  queue?: QueueHost;
  stop(): Promise<void>;
}

export function queueOptions(
  settings: HostSettings,
  overrides: Partial<QueueHostOptions> = {},
): QueueHostOptions {
  return {
    ...settings.queues,
    leaseMs: HOST_LEASE_MS,
    minPollingIntervalMs: Math.min(MIN_POLLING_INTERVAL_MS, settings.queues.maxPollingIntervalMs),
    functionTimeoutMs: settings.functionTimeoutMs,
    ...overrides,
  };
}

export async function startHost(specs: FunctionSpec[], options: HostOptions): Promise<RunningHost> {
  const want = { http: true, timer: true, queue: true, ...options.triggers };
  const settings = options.settings ?? readHostSettings();
  const running: RunningHost = { stop: async () => undefined };
  const started: { stop(): Promise<void> }[] = [];
  try {
    const httpSpecs = specs.filter((s): s is HttpFunctionSpec => s.kind === "http");
    if (want.http && httpSpecs.length) {
      running.http = new HttpHost(httpSpecs, options.log);
      running.httpPort = await running.http.start(options.httpPort ?? 7071);
      started.push(running.http);
    }
    const timerSpecs = specs.filter((s): s is TimerFunctionSpec => s.kind === "timer");
    if (want.timer && timerSpecs.length) {
      if (!options.timerStatusFile)
        throw new Error("timers need a timerStatusFile for their schedule status");
      running.timer = new TimerHost(
        timerSpecs,
        { statusFile: options.timerStatusFile, env: options.env },
        options.log,
      );
      running.timer.start();
      started.push(running.timer);
    }
    let queueSpecs = specs.filter((s): s is QueueFunctionSpec => s.kind === "queue");
    if (options.queues) {
      const known = new Set(queueSpecs.map((s) => s.queueName));
      const unknown = options.queues.filter((q) => !known.has(q));
      if (unknown.length) {
        throw new Error(
          `no queue function listens on ${unknown.join(", ")}; the app's queues are ${[...known].join(", ") || "(none)"}`,
        );
      }
      queueSpecs = queueSpecs.filter((s) => options.queues!.includes(s.queueName));
    }
    if (want.queue && queueSpecs.length) {
      running.queue = new QueueHost(
        queueSpecs,
        options.queueFor,
        queueOptions(settings, options.queue),
        options.log,
      );
      await running.queue.start();
      started.push(running.queue);
    }
  } catch (err) {
    await Promise.allSettled(started.map((s) => s.stop()));
    throw err;
  }
  let stopping: Promise<void> | undefined;
  running.stop = () => (stopping ??= Promise.all(started.map((s) => s.stop())).then(() => undefined));
  return running;
}
