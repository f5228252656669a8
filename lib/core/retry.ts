/**
 * Retry as a wrapper (kopia's way): an operation is retried only when it failed in a way that a
 * second try can cure — 408, 429, 5xx except 501/505, a network failure, a body that stalled or
 * was cut short — with exponential backoff and full jitter, so parallel workers do not retry in
 * step. Everything else is rethrown at once. The SDK clients run with their own retries off, so
 * this is the one policy. `retryOnConflict` is its twin for guarded read-modify-write of a row.
 */
import { ConflictError } from "./errors";

/** What an error says of itself: an HTTP status, a service or network code, its first line. */
export interface ErrorInfo {
  status?: number;
  code?: string;
  message: string;
}

export function errorInfo(err: unknown): ErrorInfo {
  const e = err as {
    statusCode?: unknown;
    status?: unknown;
    code?: unknown;
    message?: unknown;
    details?: { errorCode?: unknown };
  };
  const code =
    typeof e?.details?.errorCode === "string"
      ? e.details.errorCode
      : typeof e?.code === "string"
        ? e.code
        : undefined;
  const status =
    typeof e?.statusCode === "number" ? e.statusCode : typeof e?.status === "number" ? e.status : undefined;
  const firstLine = String(typeof e?.message === "string" ? e.message : err).split("\n")[0];
  return { status, code, message: firstLine };
}

/** Codes of a failed connection or a cut body: no HTTP answer came, so a retry may get one. */
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNABORTED",
  "REQUEST_SEND_ERROR",
  "UND_ERR_SOCKET",
  "ERR_STREAM_PREMATURE_CLOSE",
  // Our own: a response body that stopped arriving, or ended before its length (lib/storage).
  "BodyStalled",
  "BodyCut",
  "HeadersTimedOut",
]);

/**
 * The failed call behind a wrapper: an error that carries no status or code of its own but a
 * `cause` (a chunk's error, a step's) is judged by that cause.
 */
export function rootCause(err: unknown): unknown {
  let e = err;
  for (let depth = 0; depth < 5; depth++) {
    const { status, code } = errorInfo(e);
    const cause = (e as { cause?: unknown } | undefined)?.cause;
    if (status !== undefined || code !== undefined || cause === undefined) return e;
    e = cause;
  }
  return e;
}

export function isRetryable(err: unknown): boolean {
  const e = rootCause(err);
  if ((e as { retryable?: unknown } | undefined)?.retryable === true) return true;
  const { status, code, message } = errorInfo(e);
  if (status === undefined) {
    return (
      (code !== undefined && NETWORK_CODES.has(code)) ||
      /socket hang up|ECONNRESET|EPIPE|other side closed/i.test(message)
    );
  }
  if (status === 408 || status === 429) return true;
  return status >= 500 && status !== 501 && status !== 505;
}

export interface RetryPolicy {
  /** Tries in all, the first included. */
  attempts: number;
  baseMs: number;
  /** Ceiling of one backoff: long enough for a throttled account (Azure asks for seconds), short enough to finish. */
  maxMs?: number;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Which errors are worth another try; `isRetryable` by default. */
  retryable?: (err: unknown) => boolean;
  /** Sleeps; simulations replace it to run without waiting. */
  sleep?: (ms: number) => Promise<void>;
}

export const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function withRetry<T>(policy: RetryPolicy, op: () => Promise<T>): Promise<T> {
  const maxMs = policy.maxMs ?? 30_000;
  const retryable = policy.retryable ?? isRetryable;
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (attempt >= policy.attempts || !retryable(err)) throw err;
      const delay = Math.random() * Math.min(maxMs, policy.baseMs * 2 ** (attempt - 1));
      policy.onRetry?.(err, attempt, delay);
      await (policy.sleep ?? realSleep)(delay);
    }
  }
}

/**
 * Runs `attempt` (read a row, decide, write it under the ETag it was read with) again while it
 * fails with a ConflictError, at most `attempts` times in all; then the conflict is rethrown.
 * Any other error is rethrown at once.
 */
export async function retryOnConflict<T>(attempts: number, attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof ConflictError) || n >= attempts) throw err;
    }
  }
}

/**
 * Every async method of `target` retried under `policy` (a port wrapped the way retrying.ts wraps
 * storage). Only transient failures are retried; a conflict or a not-found is the caller's answer.
 */
export function retryingPort<T extends object>(target: T, policy: RetryPolicy): T {
  return new Proxy(target, {
    get(obj, prop, receiver) {
      const value = Reflect.get(obj, prop, receiver) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) =>
        withRetry(policy, () => (value as (...a: unknown[]) => Promise<unknown>).apply(obj, args));
    },
  });
}
