/**
 * The local host's reading of host.json: the same file the Functions host deploys with, so the
 * delivery rules tried locally (batch size, dequeue count, retry delay, polling, time limit) are
 * the ones Azure applies. Every value missing from host.json takes the Functions host's own
 * default; a value host.json sets but that cannot be read is an error naming the key, never a
 * silent default.
 */
import fs from "node:fs";
import path from "node:path";

export interface QueueSettings {
  /** Messages fetched per receive (the queue service returns at most 32). */
  batchSize: number;
  /** A new batch is fetched when no more than this many messages are still being processed. */
  newBatchThreshold: number;
  /** Deliveries of one message before it moves to `<queue>-poison`. */
  maxDequeueCount: number;
  /** Delay before a message whose invocation FAILED becomes visible again (host.json `visibilityTimeout`). */
  visibilityTimeoutMs: number;
  /** Longest wait between two polls of an empty queue. */
  maxPollingIntervalMs: number;
}

export interface HostSettings {
  queues: QueueSettings;
  /** Time limit of one invocation; undefined when host.json says unbounded (-1). */
  functionTimeoutMs?: number;
}

/** The Functions host's defaults (Microsoft.Azure.WebJobs.Extensions.Storage.Queues, host.json reference). */
export const HOST_DEFAULTS: HostSettings = {
  queues: {
    batchSize: 16,
    newBatchThreshold: 8,
    maxDequeueCount: 5,
    visibilityTimeoutMs: 0,
    maxPollingIntervalMs: 60_000,
  },
  // Consumption plan default; host.json usually sets its own.
  functionTimeoutMs: 5 * 60_000,
};

/** The queue service returns at most 32 messages per Get Messages call. */
export const MAX_BATCH_SIZE = 32;

/** Parses a .NET TimeSpan as host.json writes it: `hh:mm:ss`, `d.hh:mm:ss`, optional `.fff`. */
export function parseTimeSpan(value: string, key: string): number {
  const m = /^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$/.exec(value.trim());
  if (!m) throw new Error(`host.json ${key}=${JSON.stringify(value)} is not a time span (hh:mm:ss)`);
  const [, days, h, min, s, frac] = m;
  const fraction = frac ? Number(`0.${frac}`) : 0;
  return ((Number(days ?? 0) * 24 + Number(h)) * 3600 + Number(min) * 60 + Number(s) + fraction) * 1000;
}

/** host.json next to package.json: found by walking up from this file (lib/host or dist/lib/host). */
export function findHostJson(from = __dirname): string | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "host.json");
    if (fs.existsSync(candidate) && fs.existsSync(path.join(dir, "package.json"))) return candidate;
    if (path.dirname(dir) === dir) return undefined;
  }
}

function positiveInt(raw: unknown, key: string, max = Number.MAX_SAFE_INTEGER, min = 1): number {
  if (typeof raw !== "number" || !Number.isSafeInteger(raw) || raw < min || raw > max)
    throw new Error(`host.json ${key}=${JSON.stringify(raw)} is not an integer from ${min} to ${max}`);
  return raw;
}

export function parseHostJson(json: unknown): HostSettings {
  const root = (json ?? {}) as {
    functionTimeout?: unknown;
    extensions?: { queues?: Record<string, unknown> };
  };
  const q = root.extensions?.queues ?? {};
  const key = (name: string) => `extensions.queues.${name}`;
  const batchSize =
    q.batchSize === undefined
      ? HOST_DEFAULTS.queues.batchSize
      : positiveInt(q.batchSize, key("batchSize"), MAX_BATCH_SIZE);
  const span = (name: string, fallback: number) =>
    q[name] === undefined ? fallback : parseTimeSpan(String(q[name]), key(name));
  const queues: QueueSettings = {
    batchSize,
    newBatchThreshold:
      q.newBatchThreshold === undefined
        ? Math.floor(batchSize / 2)
        : positiveInt(q.newBatchThreshold, key("newBatchThreshold"), Number.MAX_SAFE_INTEGER, 0),
    maxDequeueCount:
      q.maxDequeueCount === undefined
        ? HOST_DEFAULTS.queues.maxDequeueCount
        : positiveInt(q.maxDequeueCount, key("maxDequeueCount")),
    visibilityTimeoutMs: span("visibilityTimeout", HOST_DEFAULTS.queues.visibilityTimeoutMs),
    maxPollingIntervalMs: span("maxPollingInterval", HOST_DEFAULTS.queues.maxPollingIntervalMs),
  };
  let functionTimeoutMs = HOST_DEFAULTS.functionTimeoutMs;
  if (root.functionTimeout !== undefined) {
    const raw = String(root.functionTimeout).trim();
    functionTimeoutMs = raw === "-1" ? undefined : parseTimeSpan(raw, "functionTimeout");
  }
  return { queues, functionTimeoutMs };
}

/** Reads host.json (the project's by default); the host's defaults when there is none. */
export function readHostSettings(file = findHostJson()): HostSettings {
  if (!file || !fs.existsSync(file)) return HOST_DEFAULTS;
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  return parseHostJson(json);
}
