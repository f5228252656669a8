/**
 * Retry as a wrapper: an operation is retried only when `isRetryable` says so (408, 429, 5xx,
 * network), with exponential backoff and full jitter so parallel workers do not retry in step.
 * The SDK clients are built with their own retries off, so this is the one retry policy.
 */
import { isRetryable } from "./errors";

export interface RetryPolicy {
  attempts: number;
  baseMs: number;
  /** Ceiling of one backoff: long enough for a throttled account (Azure asks for seconds), short enough to finish. */
  maxMs?: number;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

export async function withRetry<T>(policy: RetryPolicy, op: () => Promise<T>): Promise<T> {
  const maxMs = policy.maxMs ?? 30_000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (attempt >= policy.attempts || !isRetryable(err)) throw err;
      const delay = Math.random() * Math.min(maxMs, policy.baseMs * 2 ** (attempt - 1));
      policy.onRetry?.(err, attempt, delay);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
