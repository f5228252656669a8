/**
 * The app of a Functions process: opened once from the environment (the composition root) and
 * shared by every invocation; tests and the local host may install their own with `useApp`, so
 * handlers are called directly, without a host. Telemetry is set up here, once, when
 * APPLICATIONINSIGHTS_CONNECTION_STRING is set (and not loaded at all otherwise).
 */
import type { InvocationContext } from "@azure/functions";
import type { App } from "../app/context";
import type { Logger } from "../core/logger";
import { setupTelemetry } from "../telemetry";
import { openEngine, type Engine } from "./index";

// Process start: the Functions worker loads every function module, and each imports this one.
setupTelemetry();

let current: Promise<App> | undefined;
let opened: Engine | undefined;

/** The process's app: the one installed with `useApp`, else one opened from the environment. */
export function getApp(): Promise<App> {
  current ??= openEngine(consoleLogger(), process.env, { role: "function" }).then((engine) => {
    opened = engine;
    return engine;
  });
  current.catch(() => (current = undefined));
  return current;
}

export function useApp(app: App | undefined): void {
  current = app ? Promise.resolve(app) : undefined;
}

export async function closeApp(): Promise<void> {
  await opened?.close();
  opened = undefined;
  current = undefined;
}

function consoleLogger(): Logger {
  return { info: (m) => console.log(m), warn: (m) => console.warn(m), error: (m) => console.error(m) };
}

/** The invocation's logger, so messages land in the host's log with the invocation id. */
export function contextLogger(context: InvocationContext): Logger {
  return { info: (m) => context.log(m), warn: (m) => context.warn(m), error: (m) => context.error(m) };
}

/** The app with the invocation's logger. */
export async function appFor(context: InvocationContext): Promise<App> {
  return { ...(await getApp()), log: contextLogger(context) };
}
