/**
 * The local Functions host against the shared Azurite, with toy functions registered in-process
 * (not the app's): queue messages reach handlers as parsed objects with the trigger's metadata; a
 * failing message is retried after host.json's visibilityTimeout and after maxDequeueCount lands
 * on `<queue>-poison`, where a poison function receives it; batches run concurrently, two hosts on
 * one queue together handle every message at least once; a long handler keeps its message
 * invisible; HTTP routes params, query and JSON bodies and answers 404/405/500; timers fire, and a
 * missed occurrence fires once past due; every host stops cleanly. Short timeouts come in through
 * options; no assertion depends on timing beyond a generous deadline.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { InvocationContext, Timer } from "@azure/functions";
import type { QueueClient } from "@azure/storage-queue";
import { encodeMessage, poisonQueue } from "../../lib/queues/messages";
import type { FunctionSpec, HttpFunctionSpec, QueueFunctionSpec } from "../../lib/app/register";
import type { Engine } from "../../lib/compose";
import { discoverFunctions } from "../../lib/host/discover";
import { startHost, type RunningHost } from "../../lib/host/host";
import type { HostLogger } from "../../lib/host/invocation";
import { messageValue, QueueHost, type QueueHostOptions } from "../../lib/host/queueHost";
import { parseHostJson, readHostSettings } from "../../lib/host/settings";
import { TimerHost } from "../../lib/host/timerHost";
import { testEngine } from "../support/disks";
import { uniqueName } from "../support/testEnv";

const DEADLINE_MS = 60_000;

/** Polls `check` until it holds; fails with `what` after a generous deadline. */
async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + DEADLINE_MS;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function quietLog(): HostLogger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (m: string) => void lines.push(m);
  return { lines, info: keep, warn: keep, error: keep, debug: keep };
}

/** Fast rules for tests: 1 s retry delay, 3 deliveries, polls of at most 200 ms, a 2 s lease. */
const FAST: QueueHostOptions = {
  batchSize: 8,
  newBatchThreshold: 4,
  maxDequeueCount: 3,
  visibilityTimeoutMs: 1000,
  maxPollingIntervalMs: 200,
  minPollingIntervalMs: 20,
  leaseMs: 2000,
  functionTimeoutMs: 60_000,
};

async function approximateCount(queue: QueueClient): Promise<number> {
  return (await queue.getProperties()).approximateMessagesCount ?? 0;
}

let engine: Engine;
const hosts: { stop(): Promise<void> }[] = [];
const queueFor = (name: string) => engine.queueClient(name);

beforeAll(async () => {
  engine = await testEngine();
});

afterEach(async () => {
  await Promise.all(hosts.splice(0).map((h) => h.stop()));
});

afterAll(async () => {
  await engine.close();
});

function queueHost(specs: QueueFunctionSpec[], options: Partial<QueueHostOptions> = {}, log = quietLog()) {
  const host = new QueueHost(specs, queueFor, { ...FAST, ...options }, log);
  hosts.push(host);
  return host;
}

async function newQueue(): Promise<{ name: string; client: QueueClient }> {
  const name = uniqueName("q");
  const client = queueFor(name);
  await client.create();
  return { name, client };
}

describe("queue host", () => {
  test("a JSON message reaches the handler as the parsed object, with the trigger's metadata", async () => {
    const { name, client } = await newQueue();
    const got: { message: unknown; context: InvocationContext }[] = [];
    const host = queueHost([
      {
        kind: "queue",
        name: "toy",
        queueName: name,
        handler: async (message, context) => void got.push({ message, context }),
      },
    ]);
    await host.start();
    await client.sendMessage(encodeMessage({ diskId: "d1", n: 7, nested: { ok: true } }));
    await until("the message is handled", () => got.length === 1);
    const [{ message, context }] = got;
    expect(message).toEqual({ diskId: "d1", n: 7, nested: { ok: true } });
    expect(context.functionName).toBe("toy");
    expect(context.invocationId).toMatch(/^[0-9a-f-]{36}$/);
    expect(context.triggerMetadata).toMatchObject({
      dequeueCount: 1,
      id: expect.any(String),
      insertionTime: expect.any(String),
    });
    await until("the message is deleted", async () => (await approximateCount(client)) === 0);
  });

  test("message bodies decode as the Node worker's do: base64 JSON, plain JSON, plain text", () => {
    expect(messageValue(encodeMessage({ a: 1 }))).toEqual({ a: 1 });
    expect(messageValue(encodeMessage([1, 2]))).toEqual([1, 2]);
    expect(messageValue(Buffer.from("hello").toString("base64"))).toBe("hello");
    expect(messageValue('{"a":2}')).toEqual({ a: 2 });
    expect(messageValue("not base64!")).toBe("not base64!");
  });

  test("a failed message is retried after visibilityTimeout; succeeding on a retry deletes it", async () => {
    const { name, client } = await newQueue();
    const deliveries: number[] = [];
    const host = queueHost([
      {
        kind: "queue",
        name: "flaky",
        queueName: name,
        handler: async (_m, context) => {
          deliveries.push(context.triggerMetadata?.dequeueCount as number);
          if (deliveries.length === 1) throw new Error("transient");
        },
      },
    ]);
    await host.start();
    await client.sendMessage(encodeMessage({ x: 1 }));
    await until("the retry succeeds", () => deliveries.length === 2);
    expect(deliveries).toEqual([1, 2]);
    await until("the message is deleted", async () => (await approximateCount(client)) === 0);
    const poison = queueFor(poisonQueue(name));
    expect(await poison.exists()).toBe(false);
  });

  test("after maxDequeueCount failures the message moves to <queue>-poison, where a poison function gets it", async () => {
    const { name, client } = await newQueue();
    const deliveries: number[] = [];
    const poisoned: unknown[] = [];
    const log = quietLog();
    const host = queueHost(
      [
        {
          kind: "queue",
          name: "broken",
          queueName: name,
          handler: async (_m, context) => {
            deliveries.push(context.triggerMetadata?.dequeueCount as number);
            throw new Error("always fails");
          },
        },
        {
          kind: "queue",
          name: "brokenPoison",
          queueName: poisonQueue(name),
          handler: async (m) => void poisoned.push(m),
        },
      ],
      {},
      log,
    );
    await host.start();
    await client.sendMessage(encodeMessage({ runId: "r1", batch: 3 }));
    await until("the poison function receives it", () => poisoned.length === 1);
    expect(poisoned[0]).toEqual({ runId: "r1", batch: 3 });
    expect(deliveries).toEqual([1, 2, 3]);
    expect(await approximateCount(client)).toBe(0);
    expect(log.lines.some((l) => l.includes(`moved to ${poisonQueue(name)}`))).toBe(true);
    expect(log.lines.some((l) => l.includes("always fails"))).toBe(true);
  });

  test("a message already delivered maxDequeueCount times (its invocations killed) is poisoned without running", async () => {
    const { name, client } = await newQueue();
    await client.sendMessage(encodeMessage({ killed: true }));
    // Three deliveries that never completed, as if three workers died holding the message.
    for (let i = 0; i < FAST.maxDequeueCount; i++) {
      let item;
      await until("the message is visible", async () => {
        [item] = (await client.receiveMessages({ visibilityTimeout: 30 })).receivedMessageItems;
        return item !== undefined;
      });
      await client.updateMessage(item!.messageId, item!.popReceipt, item!.messageText, 0);
    }
    const ran: unknown[] = [];
    const poisoned: unknown[] = [];
    const host = queueHost([
      { kind: "queue", name: "k", queueName: name, handler: async (m) => void ran.push(m) },
      {
        kind: "queue",
        name: "kPoison",
        queueName: poisonQueue(name),
        handler: async (m) => void poisoned.push(m),
      },
    ]);
    await host.start();
    await until("it reaches the poison function", () => poisoned.length === 1);
    expect(poisoned[0]).toEqual({ killed: true });
    expect(ran).toEqual([]);
  });

  test("a batch runs concurrently, within batchSize + newBatchThreshold, and every message is handled", async () => {
    const { name, client } = await newQueue();
    const handled = new Map<number, number>();
    let running = 0;
    let peak = 0;
    const host = queueHost([
      {
        kind: "queue",
        name: "batch",
        queueName: name,
        handler: async (m) => {
          running++;
          peak = Math.max(peak, running);
          await new Promise((r) => setTimeout(r, 150));
          const n = (m as { n: number }).n;
          handled.set(n, (handled.get(n) ?? 0) + 1);
          running--;
        },
      },
    ]);
    await Promise.all(Array.from({ length: 30 }, (_, n) => client.sendMessage(encodeMessage({ n }))));
    await host.start();
    await until("all 30 are handled", () => handled.size === 30);
    expect(peak).toBeGreaterThan(1);
    expect(peak).toBeLessThanOrEqual(FAST.batchSize + FAST.newBatchThreshold);
    await until("the queue is empty", async () => (await approximateCount(client)) === 0);
  });

  test("two hosts on one queue (two workers) handle every message at least once between them", async () => {
    const { name, client } = await newQueue();
    const byHost: Map<number, number>[] = [new Map(), new Map()];
    const spec = (i: number): QueueFunctionSpec => ({
      kind: "queue",
      name: "shared",
      queueName: name,
      handler: async (m) => {
        await new Promise((r) => setTimeout(r, 20));
        const n = (m as { n: number }).n;
        byHost[i].set(n, (byHost[i].get(n) ?? 0) + 1);
      },
    });
    await Promise.all(Array.from({ length: 40 }, (_, n) => client.sendMessage(encodeMessage({ n }))));
    await Promise.all([
      queueHost([spec(0)], { batchSize: 4, newBatchThreshold: 0 }).start(),
      queueHost([spec(1)], { batchSize: 4, newBatchThreshold: 0 }).start(),
    ]);
    const seen = () => new Set([...byHost[0].keys(), ...byHost[1].keys()]);
    await until("all 40 are handled", () => seen().size === 40);
    await until("the queue is empty", async () => (await approximateCount(client)) === 0);
    expect(byHost[0].size + byHost[1].size).toBeGreaterThanOrEqual(40);
  });

  test("a handler running longer than the lease keeps its message invisible (renewed), then deletes it", async () => {
    const { name, client } = await newQueue();
    let calls = 0;
    let finished = false;
    const host = queueHost([
      {
        kind: "queue",
        name: "slow",
        queueName: name,
        handler: async () => {
          calls++;
          // Three leases long: without renewal the message would be delivered again meanwhile.
          await new Promise((r) => setTimeout(r, 3 * FAST.leaseMs));
          finished = true;
        },
      },
    ]);
    await host.start();
    await client.sendMessage(encodeMessage({ slow: true }));
    await until("the slow handler finishes", () => finished);
    await until("the message is deleted", async () => (await approximateCount(client)) === 0);
    expect(calls).toBe(1);
  });

  test("stop() fetches nothing more and waits for the invocation under way", async () => {
    const { name, client } = await newQueue();
    let started = 0;
    let completed = 0;
    const host = queueHost(
      [
        {
          kind: "queue",
          name: "stopper",
          queueName: name,
          handler: async () => {
            started++;
            await new Promise((r) => setTimeout(r, 500));
            completed++;
          },
        },
      ],
      { batchSize: 1, newBatchThreshold: 0 },
    );
    await host.start();
    await client.sendMessage(encodeMessage({ first: true }));
    await until("the first invocation starts", () => started === 1);
    await host.stop();
    expect(completed).toBe(1);
    await until("the first message is deleted", async () => (await approximateCount(client)) === 0);
    await client.sendMessage(encodeMessage({ afterStop: true }));
    await new Promise((r) => setTimeout(r, 300));
    expect(started).toBe(1);
    expect(await approximateCount(client)).toBe(1);
  });
});

describe("http host", () => {
  const calls: { params: unknown; query: unknown; body: unknown; method: string }[] = [];
  const specs: HttpFunctionSpec[] = [
    {
      kind: "http",
      name: "getItem",
      route: "items/{id}",
      methods: ["GET"],
      handler: async (req) => {
        calls.push({
          params: { ...req.params },
          query: Object.fromEntries(req.query),
          body: undefined,
          method: req.method,
        });
        return { jsonBody: { id: req.params.id, q: req.query.get("q") } };
      },
    },
    {
      kind: "http",
      name: "newItem",
      route: "items/new",
      methods: ["GET"],
      handler: async () => ({ status: 200, body: "the form" }),
    },
    {
      kind: "http",
      name: "postItem",
      route: "items",
      methods: ["POST"],
      handler: async (req) => {
        const body = (await req.json()) as object;
        return { status: 201, headers: { location: "/api/items/9" }, jsonBody: { received: body } };
      },
    },
    {
      kind: "http",
      name: "parts",
      route: "items/{id}/parts/{part?}",
      methods: ["GET", "DELETE"],
      handler: async (req) => ({ jsonBody: { ...req.params } }),
    },
    {
      kind: "http",
      name: "boom",
      route: "boom",
      methods: ["GET"],
      handler: async () => {
        throw new Error("secret detail");
      },
    },
  ];
  let host: RunningHost;
  let base: string;

  beforeAll(async () => {
    host = await startHost(specs, { log: quietLog(), queueFor, httpPort: 0, settings: parseHostJson({}) });
    base = `http://127.0.0.1:${host.httpPort}/api`;
  });

  afterAll(async () => {
    await host.stop();
  });

  test("route params and query reach the handler; jsonBody comes back as JSON", async () => {
    const res = await fetch(`${base}/items/abc?q=hello`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/application\/json/);
    expect(await res.json()).toEqual({ id: "abc", q: "hello" });
    expect(calls.at(-1)).toMatchObject({ params: { id: "abc" }, query: { q: "hello" }, method: "GET" });
  });

  test("a literal segment wins over a parameter, and literals match case-insensitively", async () => {
    expect(await (await fetch(`${base}/items/new`)).text()).toBe("the form");
    expect(await (await fetch(`${base}/ITEMS/new`)).text()).toBe("the form");
  });

  test("a JSON body reaches the handler; status and headers come back", async () => {
    const res = await fetch(`${base}/items`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "disk", size: 512 }),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("location")).toBe("/api/items/9");
    expect(await res.json()).toEqual({ received: { name: "disk", size: 512 } });
  });

  test("optional parameters may be left out", async () => {
    expect(await (await fetch(`${base}/items/a/parts/p1`)).json()).toEqual({ id: "a", part: "p1" });
    expect(await (await fetch(`${base}/items/a/parts`)).json()).toEqual({ id: "a" });
  });

  test("an unknown route is 404, a wrong method 405 with Allow, a throwing handler 500 without its message", async () => {
    expect((await fetch(`${base}/nothing/here`)).status).toBe(404);
    expect((await fetch(`${base}/items/a/b/c/d`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${host.httpPort}/items/a`)).status).toBe(404);
    const wrong = await fetch(`${base}/items/abc`, { method: "PUT" });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get("allow")).toBe("GET");
    const boom = await fetch(`${base}/boom`);
    expect(boom.status).toBe(500);
    expect(await boom.text()).not.toContain("secret detail");
  });
});

describe("timer host", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-timer-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("fires on its schedule (read from an app setting) with the Timer the host passes", async () => {
    const fired: Timer[] = [];
    const host = new TimerHost(
      [
        {
          kind: "timer",
          name: "tick",
          schedule: "%TICK_SCHEDULE%",
          handler: async (t) => void fired.push(t),
        },
      ],
      { statusFile: path.join(dir, "timers.json"), env: { TICK_SCHEDULE: "* * * * * *" } },
      quietLog(),
    );
    hosts.push(host);
    host.start();
    await until("it fires twice", () => fired.length >= 2);
    expect(fired[0]).toMatchObject({ isPastDue: false, schedule: { adjustForDST: false } });
    expect(Date.parse(fired[0].scheduleStatus.next)).not.toBeNaN();
    const status = JSON.parse(fs.readFileSync(path.join(dir, "timers.json"), "utf8")) as Record<
      string,
      { last: string }
    >;
    expect(Date.parse(status.tick.last)).not.toBeNaN();
  });

  test("an occurrence missed while the host was down fires once, past due", async () => {
    const statusFile = path.join(dir, "timers.json");
    // Last fired 3 days ago; two daily occurrences were missed since.
    const day = 86_400_000;
    fs.writeFileSync(
      statusFile,
      JSON.stringify({
        daily: {
          last: new Date(Date.now() - 3 * day).toISOString(),
          next: new Date(Date.now() - 2 * day).toISOString(),
          lastUpdated: new Date(Date.now() - 3 * day).toISOString(),
        },
      }),
    );
    const fired: Timer[] = [];
    const host = new TimerHost(
      [{ kind: "timer", name: "daily", schedule: "0 0 0 * * *", handler: async (t) => void fired.push(t) }],
      { statusFile },
      quietLog(),
    );
    hosts.push(host);
    host.start();
    await until("the catch-up fires", () => fired.length === 1);
    await until("the status moves on", () => {
      const s = JSON.parse(fs.readFileSync(statusFile, "utf8")) as Record<string, { next: string }>;
      return Date.parse(s.daily.next) > Date.now();
    });
    expect(fired).toHaveLength(1);
    expect(fired[0].isPastDue).toBe(true);
  });

  test("a schedule naming an unset setting is refused with the setting's name", () => {
    expect(
      () =>
        new TimerHost(
          [{ kind: "timer", name: "t", schedule: "%NOPE%", handler: async () => undefined }],
          { statusFile: path.join(dir, "t.json"), env: {} },
          quietLog(),
        ),
    ).toThrow(/NOPE/);
  });
});

describe("the whole host", () => {
  test("http, timer and queue run together and stop cleanly, finishing what runs", async () => {
    const { name, client } = await newQueue();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-host-"));
    let queueStarted = 0;
    let queueDone = 0;
    let ticks = 0;
    const specs: FunctionSpec[] = [
      {
        kind: "http",
        name: "ping",
        route: "ping",
        methods: ["GET"],
        handler: async () => ({ jsonBody: { pong: true } }),
      },
      { kind: "timer", name: "tick", schedule: "* * * * * *", handler: async () => void ticks++ },
      {
        kind: "queue",
        name: "work",
        queueName: name,
        handler: async () => {
          queueStarted++;
          await new Promise((r) => setTimeout(r, 300));
          queueDone++;
        },
      },
    ];
    const host = await startHost(specs, {
      log: quietLog(),
      queueFor,
      httpPort: 0,
      timerStatusFile: path.join(dir, "timers.json"),
      settings: parseHostJson({}),
      queue: FAST,
    });
    try {
      expect(await (await fetch(`http://127.0.0.1:${host.httpPort}/api/ping`)).json()).toEqual({
        pong: true,
      });
      await client.sendMessage(encodeMessage({ go: 1 }));
      await until("the timer ticks", () => ticks >= 1);
      await until("the message is picked up", () => queueStarted === 1);
    } finally {
      await host.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(queueDone).toBe(1);
    await expect(fetch(`http://127.0.0.1:${host.httpPort}/api/ping`)).rejects.toThrow();
  });

  test("a worker's queue filter must name queues the app listens on", async () => {
    const spec: QueueFunctionSpec = {
      kind: "queue",
      name: "a",
      queueName: uniqueName("q"),
      handler: async () => undefined,
    };
    await expect(
      startHost([spec], {
        log: quietLog(),
        queueFor,
        triggers: { http: false, timer: false },
        queues: ["nope"],
        settings: parseHostJson({}),
      }),
    ).rejects.toThrow(/no queue function listens on nope/);
  });
});

describe("host.json and discovery", () => {
  test("the project's host.json is read, with the host's defaults for what it leaves out", () => {
    const settings = readHostSettings();
    expect(settings.queues.batchSize).toBeGreaterThan(0);
    expect(settings.queues.maxDequeueCount).toBeGreaterThan(0);
    expect(parseHostJson({})).toMatchObject({
      queues: { batchSize: 16, newBatchThreshold: 8, maxDequeueCount: 5 },
    });
    expect(parseHostJson({ functionTimeout: "-1" }).functionTimeoutMs).toBeUndefined();
    expect(
      parseHostJson({ extensions: { queues: { visibilityTimeout: "00:01:30" } } }).queues.visibilityTimeoutMs,
    ).toBe(90_000);
    expect(() => parseHostJson({ extensions: { queues: { batchSize: 64 } } })).toThrow(/batchSize/);
    expect(() => parseHostJson({ functionTimeout: "ten minutes" })).toThrow(/functionTimeout/);
  });

  test("every file's specs are collected; a file without specs is skipped with a warning", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-functions-"));
    try {
      fs.writeFileSync(
        path.join(dir, "a.js"),
        `exports.functions = [{ kind: "http", name: "a", route: "a", methods: ["GET"], handler: async () => ({}) }];`,
      );
      fs.writeFileSync(path.join(dir, "helpers.js"), `exports.helper = () => 1;`);
      fs.writeFileSync(
        path.join(dir, "q.js"),
        `exports.functions = [{ kind: "queue", name: "q", queueName: "some-queue", handler: async () => undefined }];`,
      );
      const log = quietLog();
      const specs = discoverFunctions(log, dir);
      expect(specs.map((s) => s.name)).toEqual(["a", "q"]);
      expect(log.lines.some((l) => l.includes("helpers.js") && l.includes("skipped"))).toBe(true);
      fs.writeFileSync(
        path.join(dir, "z.js"),
        `exports.functions = [{ kind: "timer", name: "A", schedule: "* * * * * *", handler: async () => undefined }];`,
      );
      expect(() => discoverFunctions(quietLog(), dir)).toThrow(/defined twice/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
