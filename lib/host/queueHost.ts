/**
 * The queue trigger with the Functions host's delivery rules, on the app's own storage queues.
 * Guarantees: at-least-once delivery — a message is deleted only after its handler succeeded; it
 * stays invisible while its handler runs (the invisibility is renewed, so a long invocation is not
 * delivered twice at once, while a killed process's messages come back after one lease); a failed
 * invocation's message returns after host.json's `visibilityTimeout`; a message delivered
 * `maxDequeueCount` times without success is copied, body unchanged, to `<queue>-poison` and
 * deleted, and a function listening there receives it like any queue message. Handlers get what
 * the Node v4 worker gets: base64 decoded, JSON objects parsed, anything else as a string; each
 * invocation has its own InvocationContext with the queue trigger's metadata. `stop()` fetches no
 * more messages, returns the ones fetched but not started, and waits for running invocations.
 */
import type { QueueClient, ReceivedMessageItem } from "@azure/storage-queue";
import type { QueueFunctionSpec } from "../app/register";
import { poisonQueue } from "../queues/messages";
import { errorText, newContext, sleep, type HostLogger } from "./invocation";
import { MAX_BATCH_SIZE, type QueueSettings } from "./settings";

export interface QueueHostOptions extends QueueSettings {
  /**
   * How long a message stays invisible while its handler runs; renewed every half of it. The
   * Functions host uses 10 minutes, so a crashed instance's message returns after 10 minutes.
   */
  leaseMs: number;
  /** First wait after an empty poll; doubles up to maxPollingIntervalMs, back to this after a hit. */
  minPollingIntervalMs: number;
  /** An invocation running longer counts as failed (its message is retried), as functionTimeout does in Azure. */
  functionTimeoutMs?: number;
}

/** The host's own choice for the invisibility of a message being processed. */
export const HOST_LEASE_MS = 10 * 60_000;
/** Short, because an idle local host should still react at once to the first message after a pause. */
export const MIN_POLLING_INTERVAL_MS = 100;

/** A delivered message as the handler sees it, plus what the host needs to settle it. */
interface Delivery {
  queue: string;
  spec: QueueFunctionSpec;
  item: ReceivedMessageItem;
  popReceipt: string;
}

/** The queue service counts visibility in whole seconds; 0 is allowed (visible at once). */
function seconds(ms: number, min = 0): number {
  return Math.max(min, Math.round(ms / 1000));
}

/**
 * What the Node v4 worker hands a queue handler: the host base64-decodes the message
 * (messageEncoding base64, the default) and sends JSON objects and arrays as JSON, which the worker
 * parses; other text arrives as a string.
 */
export function messageValue(text: string): unknown {
  const decoded = Buffer.from(text, "base64").toString("utf8");
  // A message that is not valid base64 is taken as plain text, as older hosts did.
  const body = Buffer.from(decoded, "utf8").toString("base64") === text.replace(/\s/g, "") ? decoded : text;
  const trimmed = body.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      return JSON.parse(trimmed) as unknown;
    } catch {
      // not JSON after all: a string
    }
  }
  return body;
}

export class QueueHost {
  private readonly abort = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  /** Invocations past functionTimeout: no longer holding their message, but shutdown still waits for them. */
  private readonly stragglers = new Set<Promise<void>>();
  private readonly options: QueueHostOptions;

  constructor(
    private readonly specs: QueueFunctionSpec[],
    private readonly queueFor: (name: string) => QueueClient,
    options: QueueHostOptions,
    private readonly log: HostLogger,
  ) {
    const batchSize = Math.min(Math.max(1, options.batchSize), MAX_BATCH_SIZE);
    this.options = { ...options, batchSize, leaseMs: Math.max(options.leaseMs, 1000) };
    const names = new Set<string>();
    for (const spec of specs) {
      if (names.has(spec.queueName)) {
        // The Functions host would run both on the same queue and split its messages between them.
        throw new Error(`two queue functions listen on ${spec.queueName}; one queue, one function`);
      }
      names.add(spec.queueName);
    }
  }

  get queues(): string[] {
    return this.specs.map((s) => s.queueName);
  }

  /** Creates the listened queues if missing (in Azure, infra declares them) and starts polling. */
  async start(): Promise<void> {
    await Promise.all(this.specs.map((s) => this.queueFor(s.queueName).createIfNotExists()));
    for (const spec of this.specs) this.loops.push(this.poll(spec));
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await Promise.all(this.loops);
    while (this.inFlight.size || this.stragglers.size) {
      await Promise.allSettled([...this.inFlight, ...this.stragglers]);
    }
  }

  /** Resolves when stop() is called, to wake loops that wait for an invocation to finish. */
  private readonly stopped = new Promise<void>((resolve) =>
    this.abort.signal.addEventListener("abort", () => resolve(), { once: true }),
  );

  private get stopping(): boolean {
    return this.abort.signal.aborted;
  }

  private async poll(spec: QueueFunctionSpec): Promise<void> {
    const queue = this.queueFor(spec.queueName);
    const { batchSize, newBatchThreshold, minPollingIntervalMs, maxPollingIntervalMs } = this.options;
    const running = new Set<Promise<void>>();
    let delay = minPollingIntervalMs;
    while (!this.stopping) {
      // newBatchThreshold: fetch again only when this queue's running invocations drop to it.
      if (running.size > newBatchThreshold) {
        await Promise.race([...running, this.stopped]);
        continue;
      }
      let items: ReceivedMessageItem[] = [];
      try {
        const response = await queue.receiveMessages({
          numberOfMessages: batchSize,
          visibilityTimeout: seconds(this.options.leaseMs, 1),
        });
        items = response.receivedMessageItems;
      } catch (err) {
        if (!this.stopping)
          this.log.warn(`queue ${spec.queueName}: cannot receive messages (${errorText(err)}); retrying`);
      }
      if (this.stopping) {
        // Fetched during shutdown: make them visible again at once for another instance.
        await Promise.allSettled(
          items.map((i) => queue.updateMessage(i.messageId, i.popReceipt, i.messageText, 0)),
        );
        break;
      }
      if (items.length === 0) {
        await sleep(delay, this.abort.signal);
        delay = Math.min(delay * 2, maxPollingIntervalMs);
        continue;
      }
      delay = minPollingIntervalMs;
      for (const item of items) {
        const work = this.deliver(queue, { queue: spec.queueName, spec, item, popReceipt: item.popReceipt });
        running.add(work);
        this.inFlight.add(work);
        void work.finally(() => {
          running.delete(work);
          this.inFlight.delete(work);
        });
      }
    }
  }

  /** One delivery: run the handler under a renewed lease, then delete, release or poison the message. */
  private async deliver(queue: QueueClient, d: Delivery): Promise<void> {
    const { maxDequeueCount } = this.options;
    const name = d.spec.name;
    try {
      // A message already delivered maxDequeueCount times (e.g. its invocations were killed) is
      // not run again: the host poisons it before invoking, as it does after a last failure.
      if (d.item.dequeueCount > maxDequeueCount) {
        await this.poison(queue, d, `it was delivered ${d.item.dequeueCount - 1} times without completing`);
        return;
      }
      const outcome = await this.invoke(queue, d);
      if (outcome === "succeeded") {
        await queue.deleteMessage(d.item.messageId, d.popReceipt);
        return;
      }
      if (d.item.dequeueCount >= maxDequeueCount) {
        await this.poison(
          queue,
          d,
          `it failed ${d.item.dequeueCount} of ${maxDequeueCount} allowed deliveries`,
        );
        return;
      }
      // Released, not deleted: visible again after the retry delay with dequeueCount + 1.
      await queue.updateMessage(
        d.item.messageId,
        d.popReceipt,
        d.item.messageText,
        seconds(this.options.visibilityTimeoutMs),
      );
    } catch (err) {
      // Most often the lease was lost (another receiver holds the message now): at-least-once
      // delivery covers it, the message runs again wherever it is.
      this.log.warn(`${name}: could not settle message ${d.item.messageId}: ${errorText(err)}`);
    }
  }

  private async invoke(queue: QueueClient, d: Delivery): Promise<"succeeded" | "failed"> {
    const { item, spec } = d;
    const context = newContext(spec.name, this.log, {
      triggerMetadata: {
        id: item.messageId,
        dequeueCount: item.dequeueCount,
        insertionTime: item.insertedOn.toISOString(),
        expirationTime: item.expiresOn.toISOString(),
        nextVisibleTime: item.nextVisibleOn.toISOString(),
        popReceipt: item.popReceipt,
        queueTrigger: item.messageText,
      },
      options: {
        trigger: {
          type: "queueTrigger",
          name: "queueItem",
          queueName: spec.queueName,
          connection: "AzureWebJobsStorage",
        },
      },
    });
    const renewEvery = this.options.leaseMs / 2;
    // Settling must use the newest pop receipt, so it waits for a renewal under way.
    let renewing: Promise<void> = Promise.resolve();
    const renewal = setInterval(() => {
      renewing = queue
        .updateMessage(item.messageId, d.popReceipt, item.messageText, seconds(this.options.leaseMs, 1))
        .then((r) => {
          if (r.popReceipt) d.popReceipt = r.popReceipt;
        })
        .catch((err: unknown) =>
          this.log.warn(`${spec.name}: could not renew message ${item.messageId}: ${errorText(err)}`),
        );
    }, renewEvery);
    this.log.debug?.(
      `Executing '${spec.name}' (message ${item.messageId}, dequeue count ${item.dequeueCount}, id ${context.invocationId})`,
    );
    const started = Date.now();
    const handling = Promise.resolve().then(() => spec.handler(messageValue(item.messageText), context));
    let timer: NodeJS.Timeout | undefined;
    const limit = this.options.functionTimeoutMs;
    const timedOut = new Promise<"timeout">((resolve) => {
      if (limit !== undefined) timer = setTimeout(() => resolve("timeout"), limit);
    });
    try {
      const result = await Promise.race([handling.then(() => "ok" as const), timedOut]);
      if (result === "timeout") {
        const straggler = handling.then(
          () => undefined,
          () => undefined,
        );
        this.stragglers.add(straggler);
        void straggler.finally(() => this.stragglers.delete(straggler));
        context.error(
          `exceeded functionTimeout (${limit} ms); counted as failed and retried (in Azure the host would abandon it and restart)`,
        );
        return "failed";
      }
      this.log.debug?.(
        `Executed '${spec.name}' (Succeeded, id ${context.invocationId}, ${Date.now() - started} ms)`,
      );
      return "succeeded";
    } catch (err) {
      context.error(
        `failed on delivery ${item.dequeueCount} of ${this.options.maxDequeueCount}: ${errorText(err)}`,
      );
      return "failed";
    } finally {
      clearInterval(renewal);
      clearTimeout(timer);
      await renewing;
    }
  }

  private async poison(queue: QueueClient, d: Delivery, why: string): Promise<void> {
    const target = poisonQueue(d.queue);
    const poison = this.queueFor(target);
    await poison.createIfNotExists();
    // Same body: a poison handler decodes it with the same contract as the original queue.
    await poison.sendMessage(d.item.messageText);
    await queue.deleteMessage(d.item.messageId, d.popReceipt);
    this.log.warn(`${d.spec.name}: message ${d.item.messageId} moved to ${target}: ${why}`);
  }
}
