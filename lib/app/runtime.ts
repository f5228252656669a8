/**
 * The app as the triggers see it: the engine (config, clients, lineage) plus a queue sender,
 * opened once per process from the environment and shared by every invocation. Tests and the
 * local host may install their own with `useApp`, so handlers are called directly, without a host.
 */
import type { InvocationContext } from "@azure/functions";
import type { QueueClient } from "@azure/storage-queue";
import type { EngineDeps, Logger } from "../backup/run";
import { openEngine, type Engine } from "../engine";
import { encodeMessage } from "./queues";
import { setupTelemetry } from "../telemetry";

// Process start: the Functions worker loads every function module, and each imports this one.
// Telemetry is set up here once when APPLICATIONINSIGHTS_CONNECTION_STRING is set, else nothing.
setupTelemetry();

export interface QueueSender {
  /** Sends one message (JSON, base64 as the host expects) to a queue of the app's storage. */
  send(queue: string, body: object, options?: { visibilityTimeoutSeconds?: number }): Promise<void>;
}

export interface App extends EngineDeps {
  queues: QueueSender;
}

/** A QueueSender on the app's storage; creates each queue once (in Azure they are declared by infra). */
export function storageQueueSender(queueFor: (name: string) => QueueClient): QueueSender {
  const ready = new Map<string, Promise<QueueClient>>();
  return {
    async send(queue, body, options) {
      let client = ready.get(queue);
      if (!client) {
        const c = queueFor(queue);
        client = c.createIfNotExists().then(() => c);
        client.catch(() => ready.delete(queue));
        ready.set(queue, client);
      }
      await (
        await client
      ).sendMessage(encodeMessage(body), {
        visibilityTimeout: options?.visibilityTimeoutSeconds,
      });
    },
  };
}

export function appFromEngine(engine: EngineDeps): App {
  return { ...engine, queues: storageQueueSender((name) => engine.clients.queue(name)) };
}

let current: Promise<App> | undefined;
let opened: Engine | undefined;

/** The process's app: the one installed with `useApp`, else one opened from the environment. */
export function getApp(): Promise<App> {
  current ??= openEngine(consoleLogger()).then((engine) => {
    opened = engine;
    return appFromEngine(engine);
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
