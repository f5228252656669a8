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
import { addDisk } from "../../lib/backup/disks";
import { backupDisk } from "../../lib/backup/run";
import type { Engine } from "../../lib/engine";
import {
  COPY_RATE_METRIC,
  COPY_RATE_PROPERTIES,
  getTelemetry,
  parseAuthenticationString,
  RUN_EVENT,
  RUN_EVENT_MEASUREMENTS,
  RUN_EVENT_PROPERTIES,
  RUN_FAILED_EVENT,
  RUN_FAILED_PROPERTIES,
  shutdownTelemetry,
} from "../../lib/telemetry";
import { backupAccountUrl, createDisk, MiB, testEngine, writeRandom } from "../support/disks";

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

test("without a connection string there is no client; the authentication string is parsed for Entra ingestion", () => {
  const off = getTelemetry({});
  expect(() => off.runEnded({} as never)).not.toThrow();
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
