/**
 * What every trigger of the local host shares: an InvocationContext built as the Functions host
 * builds one (a fresh invocation id, the function's name, trigger metadata), whose log lines go to
 * the host's log prefixed with the function and invocation, so concurrent invocations stay
 * readable; and the host's wording around each invocation's start and end.
 */
import crypto from "node:crypto";
import { format } from "node:util";
import {
  InvocationContext,
  type InvocationContextInit,
  type LogLevel,
  type TriggerMetadata,
} from "@azure/functions";
import type { Logger } from "../core/logger";

/** The host's log, as lib/ uses it elsewhere; `debug` lines are opt-in (per-invocation chatter). */
export interface HostLogger extends Logger {
  debug?(message: string): void;
}

export function newContext(
  functionName: string,
  log: HostLogger,
  init: { triggerMetadata?: TriggerMetadata; options?: InvocationContextInit["options"] } = {},
): InvocationContext {
  const invocationId = crypto.randomUUID();
  // The first block of the id is enough to tell concurrent invocations apart in a terminal.
  const prefix = `[${functionName} ${invocationId.slice(0, 8)}]`;
  return new InvocationContext({
    invocationId,
    functionName,
    triggerMetadata: init.triggerMetadata,
    options: init.options,
    logHandler: (level: LogLevel, ...args: unknown[]) => {
      const line = `${prefix} ${format(...args)}`;
      if (level === "error" || level === "critical") log.error(line);
      else if (level === "warning") log.warn(line);
      else if (level === "trace" || level === "debug") log.debug?.(line);
      else log.info(line);
    },
  });
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Resolves after `ms`, or at once when `signal` aborts (shutdown must not wait out a poll delay). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
