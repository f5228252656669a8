/**
 * The HTTP API on the shared Azurite, each handler called directly with an HttpRequest and an
 * InvocationContext (no host): every route's answer, the 202 + Location of a backup and a restore
 * with their messages really on the queues, 409 for a second backup while the first is claimed,
 * and every kind of bad request answered 4xx with a message naming the problem, never 500; an
 * unexpected error is a 500 whose body holds no detail.
 *
 * Queue names are global on the shared Azurite and other suites run queue workers, so this suite
 * sends through the app's real queue sender to its own copies of the queues (name + suffix):
 * nothing here is consumed by, or confuses, another suite's workers.
 */
import { HttpRequest, InvocationContext, type HttpResponseInit } from "@azure/functions";
import * as http from "../../functions/http";
import { restoreRequest, restoreRequestPoison } from "../../functions/restoreQueue";
import { QUEUES } from "../../lib/queues/messages";
import { useApp } from "../../lib/compose/runtime";
import type { App } from "../../lib/app/context";
import { storageQueueSender } from "../../lib/queues/sender";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/compose";
import { uniqueName } from "../support/testEnv";
import { backupAccountUrl, createDisk, MiB, testEngine, writeRandom, type TestDisk } from "../support/disks";

type Handler = (request: HttpRequest, context: InvocationContext) => Promise<HttpResponseInit>;
interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, string>;
}

let engine: Engine;
let app: App;
const suffix = uniqueName("");
const queueOf = (name: string) => `${name}-${suffix}`;
let logged: string[] = [];

let source: TestDisk;
/** A disk with two restore points. */
let diskA: string;
/** A disk with none, used for on-demand backups. */
let diskB: string;

function context(): InvocationContext {
  return new InvocationContext({
    functionName: "test",
    invocationId: "inv-1",
    logHandler: (_level, ...args) => logged.push(args.map(String).join(" ")),
  });
}

async function call(
  handler: Handler,
  init: {
    method?: string;
    params?: Record<string, string>;
    query?: Record<string, string>;
    body?: string | object;
    headers?: Record<string, string>;
  } = {},
): Promise<Answer> {
  const body =
    init.body === undefined
      ? undefined
      : typeof init.body === "string"
        ? init.body
        : JSON.stringify(init.body);
  const request = new HttpRequest({
    method: init.method ?? (body === undefined ? "GET" : "POST"),
    url: "http://localhost:7071/api/test",
    body: body === undefined ? undefined : { string: body },
    params: init.params,
    query: init.query,
    headers: init.headers,
  });
  const response = await handler(request, context());
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries((response.headers ?? {}) as Record<string, string>))
    headers[k.toLowerCase()] = v;
  return { status: response.status ?? 200, body: response.jsonBody as Record<string, unknown>, headers };
}

/** The messages waiting on one of this suite's queues, decoded as the host would. */
async function peek(queue: string): Promise<{ text: string; body: Record<string, unknown> }[]> {
  const client = engine.queueClient(queueOf(queue));
  const { peekedMessageItems } = await client.peekMessages({ numberOfMessages: 32 });
  return peekedMessageItems.map((m) => ({
    text: m.messageText,
    body: JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")) as Record<string, unknown>,
  }));
}

/** `at` is the first tick of the default schedule (0 0 *\/12 * * *) after `after`. */
function expectNextTick(at: string, after: number): void {
  const t = Date.parse(at);
  expect(t % (12 * 3600_000)).toBe(0);
  expect(t).toBeGreaterThan(after);
  expect(t - after).toBeLessThanOrEqual(12 * 3600_000);
}

function expectClientError(answer: Answer, status: number, mentions: RegExp): void {
  expect({ status: answer.status, error: answer.body?.error }).toEqual({
    status,
    error: expect.stringMatching(mentions),
  });
}

beforeAll(async () => {
  engine = await testEngine();
  app = {
    ...engine,
    queues: storageQueueSender((name) => engine.queueClient(queueOf(name))),
  };
  useApp(app);
  source = await createDisk(8 * MiB);
  await writeRandom(source.client, 0, 1 * MiB);
  diskA = uniqueName("api");
  diskB = uniqueName("api");
});
afterAll(async () => {
  useApp(undefined);
  for (const q of Object.values(QUEUES)) await engine.queueClient(queueOf(q)).deleteIfExists();
  await engine.close();
});
beforeEach(() => {
  logged = [];
});

describe("POST /api/disks", () => {
  test("registers a disk with its own interval: 201, Location, schedule fields", async () => {
    const answer = await call(http.registerDisk, {
      body: { id: diskA, source: source.url, backupAccount: backupAccountUrl(), intervalMinutes: 60 },
    });
    expect(answer.status).toBe(201);
    expect(answer.headers.location).toBe(`/api/disks/${diskA}`);
    expect(answer.body).toMatchObject({
      id: diskA,
      source: source.url,
      backupContainer: "diskdelta",
      backupBlob: diskA,
      intervalMinutes: 60,
      stale: false,
    });
    // Never backed up: due at once, so at the schedule's next tick (default every 12 h, UTC).
    expectNextTick(answer.body.nextDueAt as string, Date.now());
    expect((await engine.lineage.getDisk(diskA))?.intervalMinutes).toBe(60);

    const other = await createDisk(4 * MiB);
    const b = await call(http.registerDisk, {
      body: { id: diskB, source: other.url, backupAccount: backupAccountUrl() },
    });
    expect(b.status).toBe(201);
    expect(b.body.intervalMinutes).toBe(12 * 60);
  });

  test("bad bodies are 400s naming the problem, nothing registered", async () => {
    const id = uniqueName("bad");
    const valid = { id, source: source.url, backupAccount: backupAccountUrl() };
    expectClientError(await call(http.registerDisk, { body: "{ id: " }), 400, /not valid JSON/);
    expectClientError(await call(http.registerDisk, { body: { ...valid, colour: "red" } }), 400, /"colour"/);
    expectClientError(
      await call(http.registerDisk, { body: { ...valid, intervalMinutes: "60" } }),
      400,
      /"intervalMinutes": must be an integer/,
    );
    expectClientError(
      await call(http.registerDisk, { body: { ...valid, intervalMinutes: 0 } }),
      400,
      /"intervalMinutes": 0 is not a whole number of minutes from 1/,
    );
    expectClientError(
      await call(http.registerDisk, { body: { source: source.url } }),
      400,
      /"id": is required/,
    );
    expectClientError(await call(http.registerDisk, { body: [valid] }), 400, /must be a JSON object/);
    expectClientError(await call(http.registerDisk, { method: "POST" }), 400, /must be a JSON object/);
    expectClientError(
      await call(http.registerDisk, { body: { ...valid, id: "Bad_Id" } }),
      400,
      /disk id "Bad_Id" is not valid/,
    );
    const badUrl = await call(http.registerDisk, { body: { ...valid, source: "not a url" } });
    expectClientError(badUrl, 400, /source/);
    expect(badUrl.body.error).not.toMatch(/--source/);
    // The old names are refused, naming the field; retention is the object every answer shows.
    const oldKeep = await call(http.registerDisk, { body: { ...valid, retainLast: 3 } });
    expectClientError(oldKeep, 400, /"retainLast": is not a field here/);
    const unknownKeep = await call(http.registerDisk, { body: { ...valid, retention: { keepHourly: 2 } } });
    expectClientError(unknownKeep, 400, /"retention.keepHourly": is not a field here/);
    const badKeep = await call(http.registerDisk, { body: { ...valid, retention: { keepLast: -1 } } });
    expectClientError(badKeep, 400, /"retention.keepLast": -1 is not a whole number from 0 to 1000/);
    expect(badKeep.body.error).not.toMatch(/--keep/);
    // A key that would reach an object's prototype is refused outright, at any depth.
    const polluting = JSON.stringify(valid).replace(
      /^\{/,
      '{"__proto__":{"admin":true},"retention":{"constructor":{}},',
    );
    const refused = await call(http.registerDisk, { body: polluting });
    expectClientError(refused, 400, /"__proto__": is not allowed/);
    expect(refused.body.error).toMatch(/"retention.constructor": is not allowed/);
    expectClientError(
      await call(http.registerDisk, { body: { ...valid, id: diskA } }),
      400,
      /already registered/,
    );
    expect(await engine.lineage.getDisk(id)).toBeUndefined();
  });

  test("a body over 64 KiB is 413, declared or not", async () => {
    const huge = JSON.stringify({ id: "x".repeat(70 * 1024) });
    expectClientError(await call(http.registerDisk, { body: huge }), 413, /larger than 65536 bytes/);
    expectClientError(
      await call(http.registerDisk, { body: "{}", headers: { "content-length": String(10 * MiB) } }),
      413,
      /larger than/,
    );
  });
});

describe("disks, runs and points", () => {
  let runIds: string[];
  beforeAll(async () => {
    const first = await backupDisk(app, diskA, { trigger: "cli" });
    await writeRandom(source.client, 2 * MiB, 3 * MiB);
    const second = await backupDisk(app, diskA, { trigger: "cli" });
    expect([first.state, second.state]).toEqual(["succeeded", "succeeded"]);
    runIds = [second.id, first.id];
  });

  test("GET /api/disks lists last success, next due time and staleness", async () => {
    const answer = await call(http.listDisks);
    expect(answer.status).toBe(200);
    const disks = answer.body.disks as Record<string, unknown>[];
    const a = disks.find((d) => d.id === diskA)!;
    // Its own 1-hour interval has not passed since the backup: the first tick after it has.
    const lastSuccess = Date.parse(a.lastSuccessAt as string);
    expectNextTick(a.nextDueAt as string, lastSuccess + 50 * 60_000);
    expect(a).toMatchObject({ stale: false, newestPointAt: expect.any(String) });
    expect(disks.find((d) => d.id === diskB)).toMatchObject({ stale: false, intervalMinutes: 720 });

    // Three hours on, diskA's newest point (interval 1 h) is older than two intervals; diskB's
    // registration (interval 12 h, no point) is not.
    useApp({ ...app, now: () => new Date(Date.now() + 3 * 3600_000) });
    try {
      const later = (await call(http.listDisks)).body.disks as Record<string, unknown>[];
      expect(later.find((d) => d.id === diskA)?.stale).toBe(true);
      expect(later.find((d) => d.id === diskB)?.stale).toBe(false);
    } finally {
      useApp(app);
    }
  });

  test("GET /api/disks/{id}: 200, 404 unknown, 400 bad id", async () => {
    const answer = await call(http.getDisk, { params: { id: diskA } });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ id: diskA, intervalMinutes: 60 });
    expectClientError(await call(http.getDisk, { params: { id: "nosuchdisk" } }), 404, /not registered/);
    expectClientError(await call(http.getDisk, { params: { id: "NO!" } }), 400, /not valid/);
  });

  test("GET /api/disks/{id}/runs lists newest first, honours ?limit, refuses a bad one", async () => {
    const answer = await call(http.listRuns, { params: { id: diskA } });
    expect(answer.status).toBe(200);
    const runs = answer.body.runs as Record<string, unknown>[];
    expect(runs.map((r) => r.id)).toEqual(runIds);
    expect(runs[0]).toMatchObject({ state: "succeeded", location: `/api/disks/${diskA}/runs/${runIds[0]}` });
    const one = await call(http.listRuns, { params: { id: diskA }, query: { limit: "1" } });
    expect((one.body.runs as unknown[]).length).toBe(1);
    for (const limit of ["0", "abc", "1.5", "5000"]) {
      expectClientError(await call(http.listRuns, { params: { id: diskA }, query: { limit } }), 400, /limit/);
    }
    expectClientError(await call(http.listRuns, { params: { id: "nosuchdisk" } }), 404, /not registered/);
  });

  test("GET /api/disks/{id}/runs/{runId} returns the run with its progress", async () => {
    const answer = await call(http.getRun, { params: { id: diskA, runId: runIds[0] } });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({
      id: runIds[0],
      diskId: diskA,
      kind: "incremental",
      state: "succeeded",
    });
    const progress = answer.body.progress as Record<string, number>;
    expect(progress.bytesCopied).toBeGreaterThanOrEqual(1 * MiB);
    expect(progress).toEqual(
      expect.objectContaining({
        chunksDone: expect.any(Number),
        chunksTotal: expect.any(Number),
        bytesCleared: expect.any(Number),
      }),
    );
    const unknownRun = "r-20200101T000000000Z-abcdef";
    expectClientError(
      await call(http.getRun, { params: { id: diskA, runId: unknownRun } }),
      404,
      /does not exist/,
    );
    expectClientError(
      await call(http.getRun, { params: { id: diskA, runId: "r-nope" } }),
      400,
      /"r-nope" is not a run id/,
    );
    expectClientError(
      await call(http.getRun, { params: { id: "nosuchdisk", runId: unknownRun } }),
      404,
      /not registered/,
    );
  });

  test("GET /api/disks/{id}/points lists restore points", async () => {
    const answer = await call(http.listPoints, { params: { id: diskA } });
    expect(answer.status).toBe(200);
    const points = answer.body.points as Record<string, unknown>[];
    expect(points).toHaveLength(2);
    expect(points[0]).toMatchObject({ diskId: diskA, runId: runIds[0], size: 8 * MiB });
    expectClientError(await call(http.listPoints, { params: { id: "nosuchdisk" } }), 404, /not registered/);
    expectClientError(await call(http.listPoints, { params: { id: "-x" } }), 400, /not valid/);
  });
});

describe("POST /api/disks/{id}/backups", () => {
  test("202 with the run and its Location, the request on the queue; a second start is 409 naming the run", async () => {
    const answer = await call(http.startBackup, { method: "POST", params: { id: diskB } });
    expect(answer.status).toBe(202);
    const runId = answer.body.runId as string;
    expect(answer.body).toMatchObject({ diskId: diskB, state: "planned" });
    expect(answer.headers.location).toBe(`/api/disks/${diskB}/runs/${runId}`);
    expect(answer.body.location).toBe(answer.headers.location);
    const queued = (await peek(QUEUES.backupRequests)).map((m) => m.body);
    expect(queued).toContainEqual({ diskId: diskB, runId, trigger: "http" });

    const again = await call(http.startBackup, { body: {}, params: { id: diskB } });
    expectClientError(again, 409, new RegExp(`busy: run ${runId} is active`));
    expect(again.body.activeRunId).toBe(runId);
    expect(again.headers.location).toBe(`/api/disks/${diskB}/runs/${runId}`);

    const polled = await call(http.getRun, { params: { id: diskB, runId } });
    expect(polled.status).toBe(200);
    expect(polled.body).toMatchObject({ id: runId, trigger: "http", state: "planned" });
    expect(polled.body.progress).toMatchObject({ chunksDone: 0, bytesCopied: 0 });
  });

  test("unknown disk 404, bad id 400, options 400, malformed JSON 400", async () => {
    expectClientError(
      await call(http.startBackup, { method: "POST", params: { id: "nosuchdisk" } }),
      404,
      /not registered/,
    );
    expectClientError(
      await call(http.startBackup, { method: "POST", params: { id: "UPPER" } }),
      400,
      /not valid/,
    );
    expectClientError(
      await call(http.startBackup, { body: { full: true }, params: { id: diskA } }),
      400,
      /"full"/,
    );
    expectClientError(
      await call(http.startBackup, { body: "{", params: { id: diskA } }),
      400,
      /not valid JSON/,
    );
    const queued = (await peek(QUEUES.backupRequests)).map((m) => m.body.diskId);
    expect(queued).not.toContain(diskA);
  });
});

describe("POST /api/disks/{id}/restores", () => {
  test("202, the resolved request on the queue; the worker restores once, a repeat is acknowledged", async () => {
    const name = uniqueName("rs");
    const latest = (await engine.lineage.listPoints(diskA, 1))[0];
    const answer = await call(http.startRestore, { body: { point: "latest", name }, params: { id: diskA } });
    expect(answer.status).toBe(202);
    expect(answer.body).toMatchObject({
      diskId: diskA,
      point: latest.id,
      name,
      location: `/api/disks/${name}`,
    });
    expect(answer.headers.location).toBe(`/api/disks/${name}`);
    const message = (await peek(QUEUES.restoreRequests)).find(
      (m) => m.body.requestId === answer.body.requestId,
    );
    expect(message?.body).toEqual({
      diskId: diskA,
      point: latest.id,
      name,
      requestId: answer.body.requestId,
    });
    expectClientError(await call(http.getDisk, { params: { id: name } }), 404, /not registered/);

    await restoreRequest(message!.text, context());
    const restored = await call(http.getDisk, { params: { id: name } });
    expect(restored.status).toBe(200);
    const runsBefore = await engine.lineage.listRuns(name);
    expect(runsBefore.map((r) => r.trigger)).toEqual(["restore"]);

    // At-least-once delivery: the same message again changes nothing.
    await restoreRequest(message!.text, context());
    expect(logged.join("\n")).toMatch(/already done/);
    expect((await engine.lineage.listRuns(name)).map((r) => r.id)).toEqual(runsBefore.map((r) => r.id));

    // The name is now taken.
    expectClientError(
      await call(http.startRestore, { body: { point: latest.id, name }, params: { id: diskA } }),
      409,
      /already registered/,
    );
  });

  test("a restore that reached the poison queue is logged as an error naming the request and how to retry", async () => {
    const body = {
      diskId: diskA,
      point: "p-20261125T114100123Z-3fa9c1",
      name: "never-made",
      requestId: "q-1",
    };
    await restoreRequestPoison(Buffer.from(JSON.stringify(body)).toString("base64"), context());
    const said = logged.join("\n");
    expect(said).toMatch(
      /restore q-1 \(disk .* point p-20261125T114100123Z-3fa9c1 as never-made\) failed on every delivery/,
    );
    expect(said).toContain(`POST /api/disks/${diskA}/restores`);
    expect(await engine.lineage.getDisk("never-made")).toBeUndefined();
    logged = [];
    await restoreRequestPoison("not json at all {", context());
    expect(logged.join("\n")).toMatch(/not a restore request.*dropped/);
  });

  test("bad restore requests are 400 or 404 naming the problem, nothing queued", async () => {
    const before = (await peek(QUEUES.restoreRequests)).length;
    const restore = (body: unknown, id = diskA) =>
      call(http.startRestore, { body: body as object, params: { id } });
    expectClientError(await restore({ point: "latest", colour: 1 }), 400, /"colour"/);
    expectClientError(
      await restore({ point: "latest", overwrite: "yes" }),
      400,
      /"overwrite": must be a boolean/,
    );
    expectClientError(await restore({ point: 7 }), 400, /"point": must be a non-empty string/);
    expectClientError(await restore({ point: "yesterday" }), 400, /"point": "yesterday" is neither/);
    expectClientError(
      await restore({ point: "latest", name: "Not Valid" }),
      400,
      /"name": disk id "Not Valid"/,
    );
    expectClientError(await restore({ point: "p-20200101T000000000Z-abcdef" }), 404, /does not exist/);
    expectClientError(await restore({ point: "2001-01-01T00:00:00Z" }), 404, /no restore point/);
    expectClientError(await restore({ point: "latest" }, diskB), 404, /no restore points yet/);
    expectClientError(await restore({ point: "latest" }, "nosuchdisk"), 404, /not registered/);
    expectClientError(await restore({ point: "latest" }, "Bad Id"), 400, /not valid/);
    expectClientError(
      await call(http.startRestore, { body: "[1,", params: { id: diskA } }),
      400,
      /not valid JSON/,
    );
    expect((await peek(QUEUES.restoreRequests)).length).toBe(before);
  });
});

test("an unexpected error is a 500 with a generic message; the detail only in the log", async () => {
  const secret = "AccountKey=c2VjcmV0LWtleQ==";
  useApp({
    ...app,
    lineage: {
      ...app.lineage,
      listDisks: () => Promise.reject(new Error(`table call failed: ${secret}`)),
    },
  });
  try {
    const answer = await call(http.listDisks);
    expect(answer.status).toBe(500);
    expect(JSON.stringify(answer.body)).not.toContain(secret);
    expect(answer.body.error).toMatch(/internal error.*invocation inv-1/);
    expect(logged.join("\n")).toContain("table call failed");
  } finally {
    useApp(app);
  }
});

test("every route is registered once, with the method and route of the API", () => {
  const routes = http.functions.map((f) =>
    f.kind === "http" ? `${f.methods.join(",")} ${f.route}` : f.kind,
  );
  expect(routes.sort()).toEqual(
    [
      "GET disks",
      "POST disks",
      "GET disks/{id}",
      "POST disks/{id}/backups",
      "GET disks/{id}/runs",
      "GET disks/{id}/runs/{runId}",
      "PATCH disks/{id}",
      "GET disks/{id}/points",
      "POST disks/{id}/restores",
    ].sort(),
  );
  expect(new Set(http.functions.map((f) => f.name)).size).toBe(http.functions.length);
});
