/**
 * Telemetry end to end: a fake Application Insights ingestion endpoint on localhost (a real HTTP
 * server; the connection string's IngestionEndpoint points at it), real backup runs on Azurite
 * through the engine's runEnded hook, and the envelopes the SDK actually sends. The names and
 * fields checked here are the ones infra/workbook.json and infra/queries/*.kql read.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import zlib from "node:zlib";
import { InvocationContext, type Timer } from "@azure/functions";
import { backupTimer } from "../../functions/timer";
import { getDisk } from "../../lib/app/api";
import { requestBackup } from "../../lib/app/backups";
import { useApp } from "../../lib/compose/runtime";
import type { App } from "../../lib/app/context";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/compose";
import {
  COPY_RATE_METRIC,
  COPY_RATE_PROPERTIES,
  DISK_STATUS_EVENT,
  DISK_STATUS_MEASUREMENTS,
  DISK_STATUS_PROPERTIES,
  getTelemetry,
  parseAuthenticationString,
  reportTimerTick,
  RUN_EVENT,
  RUN_EVENT_MEASUREMENTS,
  RUN_EVENT_PROPERTIES,
  RUN_FAILED_EVENT,
  RUN_FAILED_PROPERTIES,
  shutdownTelemetry,
  TIMER_TICK_EVENT,
  TIMER_TICK_MEASUREMENTS,
  TIMER_TICK_PROPERTIES,
} from "../../lib/telemetry";
import { backupAccountUrl, createDisk, MiB, testEngine, writeRandom } from "../support/disks";
import { uniqueName } from "../support/testEnv";

// Statsbeat (the SDK's own usage reports to a Microsoft endpoint) would leave this machine.
process.env.APPLICATION_INSIGHTS_NO_STATSBEAT = "true";

interface Envelope {
  name: string;
  iKey?: string;
  data: {
    baseType: string;
    baseData: {
      name?: string;
      properties?: Record<string, string>;
      measurements?: Record<string, number>;
      metrics?: { name: string; value: number; count?: number }[];
    };
  };
}

/** tls.setDefaultCACertificates (Node 22.19+): not yet in every @types/node. */
const tlsDefaults = tls as unknown as {
  getCACertificates(which: "default"): string[];
  setDefaultCACertificates(certs: string[]): void;
};

/**
 * A self-signed certificate for 127.0.0.1, made for this run and trusted by this process only:
 * the exporter rewrites an http:// IngestionEndpoint to https://, so the fake endpoint speaks TLS.
 */
function localCertificate(): { key: string; cert: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-ingestion-"));
  try {
    const key = path.join(dir, "key.pem");
    const cert = path.join(dir, "cert.pem");
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1"].concat([
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ]),
      { stdio: "ignore" },
    );
    return { key: fs.readFileSync(key, "utf8"), cert: fs.readFileSync(cert, "utf8") };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A fake ingestion endpoint: records every envelope POSTed to it, answers `status`. */
class FakeIngestion {
  readonly envelopes: Envelope[] = [];
  readonly paths: string[] = [];
  status = 200;
  private readonly certificate = localCertificate();
  private readonly defaultCAs = tlsDefaults.getCACertificates("default");
  private server = https.createServer(this.certificate, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      this.paths.push(req.url ?? "");
      let body = Buffer.concat(chunks);
      if (req.headers["content-encoding"] === "gzip") body = zlib.gunzipSync(body);
      let items: Envelope[] = [];
      try {
        const parsed = JSON.parse(body.toString("utf8")) as Envelope | Envelope[];
        items = Array.isArray(parsed) ? parsed : [parsed];
      } catch {
        // not an envelope batch; recorded by path only
      }
      if (this.status === 200) this.envelopes.push(...items);
      res.writeHead(this.status, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          itemsReceived: items.length,
          itemsAccepted: this.status === 200 ? items.length : 0,
          errors: [],
        }),
      );
    });
  });

  async start(): Promise<void> {
    tlsDefaults.setDefaultCACertificates([...this.defaultCAs, this.certificate.cert]);
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
  }

  get connectionString(): string {
    const { port } = this.server.address() as AddressInfo;
    return `InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint=http://127.0.0.1:${port}/`;
  }

  events(name: string, runId: string): Envelope[] {
    return this.envelopes.filter(
      (e) =>
        e.data.baseType === "EventData" &&
        e.data.baseData.name === name &&
        e.data.baseData.properties?.runId === runId,
    );
  }

  /** Events of one name received after the first `from` envelopes. */
  eventsNamed(name: string, from = 0): Envelope[] {
    return this.envelopes
      .slice(from)
      .filter((e) => e.data.baseType === "EventData" && e.data.baseData.name === name);
  }

  metrics(
    name: string,
    diskId: string,
  ): { name: string; value: number; properties: Record<string, string> }[] {
    return this.envelopes
      .filter((e) => e.data.baseType === "MetricData" && e.data.baseData.properties?.diskId === diskId)
      .flatMap((e) =>
        (e.data.baseData.metrics ?? [])
          .filter((m) => m.name === name)
          .map((m) => ({ ...m, properties: e.data.baseData.properties ?? {} })),
      );
  }

  async until<T>(what: string, probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = probe();
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`the fake ingestion endpoint never received ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  close(): Promise<void> {
    tlsDefaults.setDefaultCACertificates(this.defaultCAs);
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const ingestion = new FakeIngestion();
let engine: Engine;

beforeAll(async () => {
  await ingestion.start();
  engine = await testEngine({ env: { APPLICATIONINSIGHTS_CONNECTION_STRING: ingestion.connectionString } });
});

afterAll(async () => {
  await shutdownTelemetry();
  await engine?.close();
  await ingestion.close();
});

test("a succeeded backup run sends diskdelta.run with its fields, and the copy-rate metric", async () => {
  const disk = await createDisk(8 * MiB);
  await writeRandom(disk.client, 0, 2 * MiB);
  await addDisk(engine, { id: "tele-ok", source: disk.url, backupAccount: backupAccountUrl() });
  const run = await backupDisk(engine, "tele-ok", { trigger: "cli" });
  expect(run.state).toBe("succeeded");
  expect(run.bytesCopied).toBe(2 * MiB);

  const [event] = await ingestion.until("the run event", () => {
    const found = ingestion.events(RUN_EVENT, run.id);
    return found.length ? found : undefined;
  });
  expect(event.name).toBe("Microsoft.ApplicationInsights.Event");
  const { properties, measurements } = event.data.baseData;
  expect(properties).toMatchObject({
    diskId: "tele-ok",
    runId: run.id,
    kind: "full",
    detection: "valid-ranges",
    state: "succeeded",
    trigger: "cli",
    restorePoint: run.restorePoint,
  });
  expect(properties).not.toHaveProperty("error");
  expect(measurements).toMatchObject({
    bytesCopied: 2 * MiB,
    bytesCleared: 0,
    chunks: run.chunksDone,
    ranges: run.rangesWritten + run.rangesCleared,
    // No interval of its own: the default schedule's, every 12 hours.
    intervalMinutes: 720,
  });
  const expectedSeconds = (Date.parse(run.finishedAt!) - Date.parse(run.startedAt)) / 1000;
  expect(measurements!.durationSeconds).toBeCloseTo(expectedSeconds, 3);
  // Every field sent is one the queries may read, and no more.
  for (const key of Object.keys(properties!))
    expect(RUN_EVENT_PROPERTIES as readonly string[]).toContain(key);
  for (const key of Object.keys(measurements!))
    expect(RUN_EVENT_MEASUREMENTS as readonly string[]).toContain(key);
  // A succeeded run sends no failure event.
  expect(ingestion.events(RUN_FAILED_EVENT, run.id)).toEqual([]);

  const [metric] = await ingestion.until("the copy-rate metric", () => {
    const found = ingestion.metrics(COPY_RATE_METRIC, "tele-ok");
    return found.length ? found : undefined;
  });
  expect(metric.properties).toMatchObject({ diskId: "tele-ok", kind: "full" });
  for (const key of COPY_RATE_PROPERTIES) expect(metric.properties).toHaveProperty(key);
  expect(metric.value).toBeCloseTo((2 * MiB) / Math.max(expectedSeconds, 1e-9), 0);
});

test("a disk's own interval is reported with its runs", async () => {
  const disk = await createDisk(4 * MiB);
  await writeRandom(disk.client, 0, 512);
  await addDisk(engine, { id: "tele-hourly", source: disk.url, backupAccount: backupAccountUrl() });
  const registered = await engine.lineage.getDisk("tele-hourly");
  await engine.lineage.updateDisk({ ...registered!, intervalMinutes: 60 });
  const run = await backupDisk(engine, "tele-hourly", { trigger: "timer" });
  const [event] = await ingestion.until("the run event", () => {
    const found = ingestion.events(RUN_EVENT, run.id);
    return found.length ? found : undefined;
  });
  expect(event.data.baseData.properties).toMatchObject({ trigger: "timer", state: "succeeded" });
  expect(event.data.baseData.measurements).toMatchObject({ intervalMinutes: 60 });
});

test("a failed run sends diskdelta.run (state failed, its error) and diskdelta.runFailed with the reason", async () => {
  const disk = await createDisk(4 * MiB);
  await addDisk(engine, { id: "tele-fail", source: disk.url, backupAccount: backupAccountUrl() });
  // The disk disappears after registration: the run's snapshot fails with 404.
  await disk.client.delete({ deleteSnapshots: "include" });
  await expect(backupDisk(engine, "tele-fail", { trigger: "http" })).rejects.toThrow();
  const [failed] = await engine.lineage.listRuns("tele-fail", 1);
  expect(failed.state).toBe("failed");
  expect(failed.error).toBeTruthy();

  const [runEvent] = await ingestion.until("the run event", () => {
    const found = ingestion.events(RUN_EVENT, failed.id);
    return found.length ? found : undefined;
  });
  expect(runEvent.data.baseData.properties).toMatchObject({
    diskId: "tele-fail",
    state: "failed",
    trigger: "http",
    error: failed.error!.slice(0, 1024),
  });
  const [failure] = await ingestion.until("the failure event", () => {
    const found = ingestion.events(RUN_FAILED_EVENT, failed.id);
    return found.length ? found : undefined;
  });
  expect(failure.data.baseData.properties).toEqual({
    diskId: "tele-fail",
    runId: failed.id,
    kind: failed.kind,
    trigger: "http",
    reason: failed.error!.slice(0, 1024),
  });
  expect(Object.keys(failure.data.baseData.properties!).sort()).toEqual([...RUN_FAILED_PROPERTIES].sort());
  // No copy rate for a run that copied nothing.
  expect(ingestion.metrics(COPY_RATE_METRIC, "tele-fail")).toEqual([]);
});

test("an ingestion endpoint that refuses everything neither fails nor holds up a run", async () => {
  ingestion.status = 503;
  try {
    const disk = await createDisk(4 * MiB);
    await writeRandom(disk.client, 0, MiB);
    await addDisk(engine, { id: "tele-down", source: disk.url, backupAccount: backupAccountUrl() });
    const before = ingestion.paths.length;
    const run = await backupDisk(engine, "tele-down", { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    // The SDK did try (so this does not pass for lack of an attempt), and a flush still resolves …
    await getTelemetry({ APPLICATIONINSIGHTS_CONNECTION_STRING: ingestion.connectionString }).flush();
    await ingestion.until("a refused attempt", () => (ingestion.paths.length > before ? true : undefined));
    // … and nothing it sent was accepted.
    expect(ingestion.events(RUN_EVENT, run.id)).toEqual([]);
  } finally {
    ingestion.status = 200;
  }
});

const DAY_MS = 24 * 60 * 60 * 1000;

function timerInfo(): Timer {
  return { isPastDue: false, schedule: { adjustForDST: false }, scheduleStatus: undefined as never };
}

/**
 * An app on an engine of its own (its own table prefix, so a tick sees only this test's disks)
 * with the same telemetry. The lineage is real (Azurite); queue messages are kept in memory, so no
 * other suite's worker receives a request for a disk it does not know.
 */
async function tickApp() {
  const own = await testEngine({
    env: { APPLICATIONINSIGHTS_CONNECTION_STRING: ingestion.connectionString },
  });
  const sent: { queue: string; body: { diskId: string; runId: string } }[] = [];
  const app: App = {
    ...own,
    queues: {
      send: async (queue, body) => void sent.push({ queue, body: body as (typeof sent)[0]["body"] }),
    },
  };
  return { own, app, sent };
}

test("a timer tick sends diskdelta.diskStatus for every disk (the API's stale flag) and one diskdelta.timerTick", async () => {
  const { own, app, sent } = await tickApp();
  // The tick happens two days from now: the disks' restore points are then two days old.
  const at = new Date(Date.now() + 2 * DAY_MS);
  app.now = () => at;
  useApp(app);
  try {
    // Weekly: a two-day-old point is fresh, and the disk is not due.
    const weekly = uniqueName("tele-week");
    const weeklyDisk = await createDisk(4 * MiB);
    await writeRandom(weeklyDisk.client, 0, 512);
    await addDisk(own, { id: weekly, source: weeklyDisk.url, backupAccount: backupAccountUrl() });
    await own.lineage.updateDisk({
      ...(await own.lineage.getDisk(weekly))!,
      intervalMinutes: 7 * 24 * 60,
    });
    const weeklyRun = await backupDisk(own, weekly, { trigger: "cli" });
    // The schedule's 12 hours: two days is four intervals, so stale, and due.
    const daily = uniqueName("tele-12h");
    const dailyDisk = await createDisk(4 * MiB);
    await writeRandom(dailyDisk.client, 0, 512);
    await addDisk(own, { id: daily, source: dailyDisk.url, backupAccount: backupAccountUrl() });
    await backupDisk(own, daily, { trigger: "cli" });
    // Never backed up, and a run is already claimed: skipped as busy; stale by its registration.
    const busy = uniqueName("tele-busy");
    const busyDisk = await createDisk(4 * MiB);
    await addDisk(own, { id: busy, source: busyDisk.url, backupAccount: backupAccountUrl() });
    const active = await requestBackup(app, busy, "http");
    sent.length = 0;

    const from = ingestion.envelopes.length;
    const context = new InvocationContext({
      invocationId: uniqueName("inv"),
      functionName: "backupTimer",
      logHandler: () => undefined,
    });
    await backupTimer(timerInfo(), context);

    // What the tick itself did: one request, for the due disk.
    expect(sent.map((m) => m.body.diskId)).toEqual([daily]);
    const queuedRunId = sent[0].body.runId;

    const statuses = await ingestion.until("a status of each disk", () => {
      const found = ingestion.eventsNamed(DISK_STATUS_EVENT, from);
      return found.length >= 3 ? found : undefined;
    });
    // The table prefix is this test's own: these three are all the disks there are.
    const byDisk = new Map(statuses.map((e) => [e.data.baseData.properties!.diskId, e.data.baseData]));
    expect([...byDisk.keys()].sort()).toEqual([weekly, daily, busy].sort());
    expect(statuses).toHaveLength(3);

    const weeklyPoint = (await own.lineage.listPoints(weekly, 1))[0];
    expect(byDisk.get(weekly)).toMatchObject({
      properties: { diskId: weekly, stale: "false", action: "notDue", lastSuccessAt: expect.any(String) },
      measurements: { intervalMinutes: 7 * 24 * 60, staleAfterMinutes: 2 * 7 * 24 * 60 },
    });
    expect(byDisk.get(weekly)!.properties!.newestPointAt).toBeDefined();
    expect(Date.parse(byDisk.get(weekly)!.properties!.newestPointAt!)).toBeLessThanOrEqual(
      Date.parse(weeklyRun.finishedAt!),
    );
    expect(weeklyPoint).toBeDefined();
    const weeklyAge = byDisk.get(weekly)!.measurements!.newestPointAgeMinutes;
    expect(weeklyAge).toBeGreaterThanOrEqual(2 * 24 * 60 - 2);
    expect(weeklyAge).toBeLessThanOrEqual(2 * 24 * 60 + 1);

    expect(byDisk.get(daily)).toMatchObject({
      properties: { diskId: daily, stale: "true", action: "queued", runId: queuedRunId },
      measurements: { intervalMinutes: 720, staleAfterMinutes: 1440 },
    });
    expect(byDisk.get(daily)!.measurements!.newestPointAgeMinutes).toBeGreaterThan(1440);

    expect(byDisk.get(busy)).toMatchObject({
      properties: { diskId: busy, stale: "true", action: "busy", runId: active.id },
      measurements: { intervalMinutes: 720, staleAfterMinutes: 1440 },
    });
    // No restore point: no age and no point time (the alert reads both as empty).
    expect(byDisk.get(busy)!.measurements).not.toHaveProperty("newestPointAgeMinutes");
    expect(byDisk.get(busy)!.properties).not.toHaveProperty("newestPointAt");
    expect(byDisk.get(busy)!.properties).not.toHaveProperty("lastSuccessAt");

    // The same stale flag, interval and point time as GET /api/disks/{id} at the same instant.
    for (const id of [weekly, daily, busy]) {
      const view = await getDisk(app, id);
      const status = byDisk.get(id)!;
      expect({ id, stale: status.properties!.stale }).toEqual({ id, stale: String(view.stale) });
      expect(status.measurements!.intervalMinutes).toBe(view.intervalMinutes);
      expect(status.properties!.newestPointAt).toBe(view.newestPointAt);
    }
    // Every field sent is one the queries may read.
    for (const e of statuses) {
      for (const key of Object.keys(e.data.baseData.properties!))
        expect(DISK_STATUS_PROPERTIES as readonly string[]).toContain(key);
      for (const key of Object.keys(e.data.baseData.measurements!))
        expect(DISK_STATUS_MEASUREMENTS as readonly string[]).toContain(key);
    }

    const [tickEvent] = await ingestion.until("the tick", () => {
      const found = ingestion.eventsNamed(TIMER_TICK_EVENT, from);
      return found.length ? found : undefined;
    });
    expect(tickEvent.data.baseData.properties).toEqual({ pastDue: "false" });
    expect(tickEvent.data.baseData.measurements).toEqual({
      disks: 3,
      due: 2,
      queued: 1,
      skipped: 1,
      failed: 0,
    });
    expect(Object.keys(tickEvent.data.baseData.properties!).sort()).toEqual(
      [...TIMER_TICK_PROPERTIES].sort(),
    );
    expect(Object.keys(tickEvent.data.baseData.measurements!).sort()).toEqual(
      [...TIMER_TICK_MEASUREMENTS].sort(),
    );
    expect(ingestion.eventsNamed(TIMER_TICK_EVENT, from)).toHaveLength(1);
  } finally {
    useApp(undefined);
    await own.close();
  }
});

test("a tick whose telemetry hook throws still queues, logs a warning and returns", async () => {
  const { own, app, sent } = await tickApp();
  const id = uniqueName("tele-tickdown");
  const disk = await createDisk(4 * MiB);
  await addDisk(own, { id, source: disk.url, backupAccount: backupAccountUrl() });
  app.timerTicked = () => {
    throw new Error("exporter exploded");
  };
  useApp(app);
  try {
    const warnings: string[] = [];
    const context = new InvocationContext({
      invocationId: uniqueName("inv"),
      functionName: "backupTimer",
      logHandler: (level, ...args) => void (level === "warning" && warnings.push(args.map(String).join(" "))),
    });
    await expect(backupTimer(timerInfo(), context)).resolves.toBeUndefined();
    expect(sent.map((m) => m.body.diskId)).toEqual([id]);
    expect(warnings.join("\n")).toContain("timerTicked did not complete: exporter exploded");
  } finally {
    useApp(undefined);
    await own.close();
  }
});

test("without a connection string there is no client; the authentication string is parsed for Entra ingestion", () => {
  const off = getTelemetry({});
  expect(() => off.runEnded({} as never)).not.toThrow();
  expect(() => off.timerTicked({} as never)).not.toThrow();
  // No hook at all: a tick then reads no restore points for telemetry.
  expect(reportTimerTick({})).toBeUndefined();
  expect(reportTimerTick({ APPLICATIONINSIGHTS_CONNECTION_STRING: " " })).toBeUndefined();
  expect(getTelemetry({ APPLICATIONINSIGHTS_CONNECTION_STRING: "  " })).toBe(off);
  expect(parseAuthenticationString("Authorization=AAD;ClientId=abc-123")).toEqual({
    aad: true,
    clientId: "abc-123",
  });
  expect(parseAuthenticationString("ClientId=abc-123;Authorization=AAD")).toEqual({
    aad: true,
    clientId: "abc-123",
  });
  expect(parseAuthenticationString("authorization=aad")).toEqual({ aad: true, clientId: undefined });
  expect(parseAuthenticationString(undefined)).toEqual({ aad: false, clientId: undefined });
});
