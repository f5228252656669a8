/**
 * The queue port: sending one message to one of the app's queues. The Functions host (or the local
 * host, lib/host) receives them; delivery is at-least-once, so every consumer is safe to run twice
 * on the same message. Two implementations: the app's storage queues (Azure SDK, here), and an
 * in-memory one that keeps what was sent (tests, the bench, simulations).
 */
import type { QueueClient } from "@azure/storage-queue";
import type { AzureCredentials } from "../azure/credentials";
import type { StorageConnection } from "../config/settings";
import { encodeMessage } from "./messages";

export interface QueueSender {
  /** Sends one message (JSON, base64 as the host expects) to a queue of the app's storage. */
  send(queue: string, body: object, options?: { visibilityTimeoutSeconds?: number }): Promise<void>;
}

/** A client of one queue in the storage that AzureWebJobsStorage names (the app's own queues). */
export function queueClient(
  storage: StorageConnection,
  credentials: AzureCredentials,
  name: string,
): QueueClient {
  // Loaded on the first queue a process uses (about 18 MiB): a backup that does not fan out never does.
  const { QueueClient, StorageSharedKeyCredential } =
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require("@azure/storage-queue") as typeof import("@azure/storage-queue");
  if (storage.kind === "connectionString") return new QueueClient(storage.connectionString, name);
  if (!storage.queueServiceUri) throw new Error("AzureWebJobsStorage__queueServiceUri is not set");
  const url = `${storage.queueServiceUri.replace(/\/$/, "")}/${name}`;
  const account = /^https?:\/\/([^./]+)/.exec(storage.queueServiceUri)?.[1] ?? "";
  const key = credentials.key(account);
  return key
    ? new QueueClient(url, new StorageSharedKeyCredential(account, key))
    : new QueueClient(url, credentials.identity());
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
      ).sendMessage(encodeMessage(body), { visibilityTimeout: options?.visibilityTimeoutSeconds });
    },
  };
}

/** Keeps every message sent, per queue, in order: for tests, the bench and simulations. */
export class MemoryQueues implements QueueSender {
  readonly sent = new Map<string, object[]>();

  async send(queue: string, body: object): Promise<void> {
    const list = this.sent.get(queue) ?? [];
    list.push(structuredClone(body));
    this.sent.set(queue, list);
  }

  /** Removes and returns the messages of `queue` sent so far. */
  take(queue: string): object[] {
    const list = this.sent.get(queue) ?? [];
    this.sent.set(queue, []);
    return list;
  }
}
