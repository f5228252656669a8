/**
 * Run telemetry for Application Insights. Guarantees: with APPLICATIONINSIGHTS_CONNECTION_STRING
 * set, one client is created per process (`setupTelemetry` at start, or the first run that ends)
 * and every run that reaches succeeded or failed becomes one `diskdelta.run` custom event, plus a
 * `diskdelta.runFailed` event when it failed and a `diskdelta.copyRateBytesPerSecond` metric when
 * it copied bytes; without it, nothing is loaded, sent or started. Telemetry never throws into the
 * caller and never makes it wait (a backup must not fail or slow down because monitoring did), and
 * it keeps no timer or socket that holds a process open. It never carries a credential: only the
 * run record's ids, counters and error text, which the engine already keeps free of secrets
 * (invariant 7).
 *
 * Every timer tick that listed the disks also sends one `diskdelta.diskStatus` event per registered
 * disk (its interval, newest restore point, and the `stale` flag by lib/app/timer.ts isStale, the
 * API's own arithmetic) and one `diskdelta.timerTick` event: the stale-restore-point alert reads the
 * newest status of each disk, and the no-heartbeat alert fires when ticks stop arriving, which is
 * what a dead app looks like from outside.
 *
 * The workbook (infra/workbook.json) and the alert rules (infra/queries/*.kql) query these exact
 * names; test/unit/infra.test.ts checks that they do, test/integration/telemetry.test.ts that a
 * real run sends them.
 */
import type { TokenCredential } from "@azure/identity";
import { intervalMsOf, type DiskStatus, type TimerTickReport } from "../app/timer";
import type { DiskRecord, RunRecord } from "../lineage/types";

/** customEvents name of every finished run (succeeded or failed). */
export const RUN_EVENT = "diskdelta.run";
/** customEvents name of every failed run; `reason` says why. The failed-run alert counts these. */
export const RUN_FAILED_EVENT = "diskdelta.runFailed";
/** customMetrics name of a run's copy rate: bytes copied / run duration, per succeeded run that copied. */
export const COPY_RATE_METRIC = "diskdelta.copyRateBytesPerSecond";

/** Property (customDimensions) and measurement (customMeasurements) names of RUN_EVENT. */
export const RUN_EVENT_PROPERTIES = [
  "diskId",
  "runId",
  "kind",
  "detection",
  "state",
  "trigger",
  "error",
  "reason",
  "restorePoint",
] as const;
export const RUN_EVENT_MEASUREMENTS = [
  "durationSeconds",
  "bytesCopied",
  "bytesCleared",
  "chunks",
  "ranges",
  "intervalMinutes",
] as const;
/** Properties of RUN_FAILED_EVENT: `reason` is the run's error (or, lacking one, its reason). */
export const RUN_FAILED_PROPERTIES = ["diskId", "runId", "kind", "trigger", "reason"] as const;
/** customDimensions of COPY_RATE_METRIC. */
export const COPY_RATE_PROPERTIES = ["diskId", "kind"] as const;

/**
 * customEvents name of one disk's status, sent for every registered disk on every timer tick. The
 * stale-restore-point alert fires for a disk whose newest status has `stale` "true".
 */
export const DISK_STATUS_EVENT = "diskdelta.diskStatus";
/**
 * Properties of DISK_STATUS_EVENT: `stale` is "true" or "false"; `action` what the tick did
 * ("queued", "busy" (a run still active, `runId` names it), "failed", "notDue"); times are ISO 8601.
 */
export const DISK_STATUS_PROPERTIES = [
  "diskId",
  "stale",
  "action",
  "runId",
  "newestPointAt",
  "lastSuccessAt",
] as const;
/** Measurements of DISK_STATUS_EVENT; `newestPointAgeMinutes` is absent when the disk has no point. */
export const DISK_STATUS_MEASUREMENTS = [
  "intervalMinutes",
  "newestPointAgeMinutes",
  "staleAfterMinutes",
] as const;
/** customEvents name of every timer tick that listed the disks: the no-heartbeat alert counts these. */
export const TIMER_TICK_EVENT = "diskdelta.timerTick";
/** Properties of TIMER_TICK_EVENT: `pastDue` is "true" for a catch-up tick. */
export const TIMER_TICK_PROPERTIES = ["pastDue"] as const;
/** Measurements of TIMER_TICK_EVENT: disks listed, due, queued, skipped (busy) and failed. */
export const TIMER_TICK_MEASUREMENTS = ["disks", "due", "queued", "skipped", "failed"] as const;

export interface RunContext {
  /**
   * The disk's backup interval in minutes (its own intervalMinutes, else the schedule's). The
   * stale-restore-point alert compares the newest success with twice this.
   */
  intervalMinutes?: number;
}

export interface Telemetry {
  /** Call once when a run reaches succeeded or failed; sends without making the caller wait. */
  runEnded(run: RunRecord, context?: RunContext): void;
  /** Call once per timer tick that listed the disks; sends without making the caller wait. */
  timerTicked(report: TimerTickReport): void;
  /** Sends what is buffered. Never rejects. */
  flush(): Promise<void>;
}

const NO_TELEMETRY: Telemetry = {
  runEnded: () => undefined,
  timerTicked: () => undefined,
  flush: async () => undefined,
};

/** The subset of applicationinsights' TelemetryClient used here. */
interface Client {
  trackEvent(t: {
    name: string;
    properties?: Record<string, string>;
    measurements?: Record<string, number>;
  }): void;
  trackMetric(t: { name: string; value: number; properties?: Record<string, string> }): void;
  flush(): Promise<void>;
  shutdown(): Promise<void>;
  config: { aadTokenCredential?: TokenCredential; enableUseDiskRetryCaching?: boolean };
}

/** Error texts are kept short: App Insights truncates properties at 8 KiB and a stack adds nothing here. */
const MAX_TEXT = 1024;

/** Custom dimensions without the empty ones (App Insights would store "" or "undefined"). */
function presentOnly(props: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(props).filter(([, v]) => v !== undefined && v !== "")) as Record<
    string,
    string
  >;
}

export function runEventProperties(run: RunRecord): Record<string, string> {
  return presentOnly({
    diskId: run.diskId,
    runId: run.id,
    kind: run.kind,
    detection: run.detection,
    state: run.state,
    trigger: run.trigger,
    error: run.error?.slice(0, MAX_TEXT),
    reason: run.reason?.slice(0, MAX_TEXT),
    restorePoint: run.restorePoint,
  });
}

export function runDurationSeconds(run: RunRecord): number {
  const started = Date.parse(run.startedAt);
  const finished = Date.parse(run.finishedAt ?? run.updatedAt);
  return Number.isFinite(started) && Number.isFinite(finished) ? Math.max(0, (finished - started) / 1000) : 0;
}

export function runEventMeasurements(run: RunRecord, context?: RunContext): Record<string, number> {
  const m: Record<string, number> = {
    durationSeconds: runDurationSeconds(run),
    bytesCopied: run.bytesCopied,
    bytesCleared: run.bytesCleared,
    chunks: run.chunksDone,
    ranges: run.rangesWritten + run.rangesCleared,
  };
  if (context?.intervalMinutes !== undefined) m.intervalMinutes = context.intervalMinutes;
  return m;
}

export function diskStatusProperties(status: DiskStatus): Record<string, string> {
  return presentOnly({
    diskId: status.diskId,
    stale: String(status.stale),
    action: status.action,
    runId: status.runId,
    newestPointAt: status.newestPointAt,
    lastSuccessAt: status.lastSuccessAt,
  });
}

export function diskStatusMeasurements(status: DiskStatus): Record<string, number> {
  const m: Record<string, number> = {
    intervalMinutes: status.intervalMinutes,
    staleAfterMinutes: status.staleAfterMinutes,
  };
  if (status.newestPointAgeMinutes !== undefined) m.newestPointAgeMinutes = status.newestPointAgeMinutes;
  return m;
}

class AppInsightsTelemetry implements Telemetry {
  constructor(readonly client: Client) {}

  runEnded(run: RunRecord, context?: RunContext): void {
    try {
      const properties = runEventProperties(run);
      this.client.trackEvent({
        name: RUN_EVENT,
        properties,
        measurements: runEventMeasurements(run, context),
      });
      if (run.state === "failed") {
        // One field for the cause, so the alert and the workbook need not know whether the
        // engine put it in `error` or `reason`.
        this.client.trackEvent({
          name: RUN_FAILED_EVENT,
          properties: {
            diskId: run.diskId,
            runId: run.id,
            kind: run.kind,
            trigger: run.trigger,
            reason: properties.error ?? properties.reason ?? "unknown",
          },
        });
      }
      const seconds = runDurationSeconds(run);
      if (run.state === "succeeded" && run.bytesCopied > 0 && seconds > 0) {
        this.client.trackMetric({
          name: COPY_RATE_METRIC,
          value: run.bytesCopied / seconds,
          properties: { diskId: run.diskId, kind: run.kind },
        });
      }
    } catch {
      // See the module comment: monitoring never fails a backup.
    }
    // Sent now rather than at the next batch tick: a Flex Consumption instance may be scaled in
    // soon after its last run, and a CLI process ends right after it. Not awaited.
    void this.flush();
  }

  timerTicked(report: TimerTickReport): void {
    try {
      for (const status of report.statuses) {
        this.client.trackEvent({
          name: DISK_STATUS_EVENT,
          properties: diskStatusProperties(status),
          measurements: diskStatusMeasurements(status),
        });
      }
      const { summary } = report;
      this.client.trackEvent({
        name: TIMER_TICK_EVENT,
        properties: { pastDue: String(report.pastDue) },
        measurements: {
          disks: summary.disks,
          due: summary.due,
          queued: summary.queued.length,
          skipped: summary.skipped.length,
          failed: summary.failed.length,
        },
      });
    } catch {
      // Monitoring never fails a tick.
    }
    // A timer invocation ends right after this; the instance may be scaled in. Not awaited.
    void this.flush();
  }

  async flush(): Promise<void> {
    try {
      await this.client.flush();
    } catch {
      // The exporter reports its own failures through OpenTelemetry's diag logger.
    }
  }
}

/**
 * `Authorization=AAD;ClientId=<id>` (the format the Functions host documents for
 * APPLICATIONINSIGHTS_AUTHENTICATION_STRING). applicationinsights reads that setting only in its
 * auto-attach agent, not in a TelemetryClient, so it is applied here: with local auth disabled on
 * the resource, telemetry without an Entra token is refused.
 */
export function parseAuthenticationString(raw: string | undefined): {
  aad: boolean;
  clientId?: string;
} {
  const parts = new Map<string, string>();
  for (const piece of (raw ?? "").split(";")) {
    const eq = piece.indexOf("=");
    if (eq > 0) parts.set(piece.slice(0, eq).trim().toLowerCase(), piece.slice(eq + 1).trim());
  }
  return {
    aad: parts.get("authorization")?.toUpperCase() === "AAD",
    clientId: parts.get("clientid") || undefined,
  };
}

let current: { key: string; telemetry: AppInsightsTelemetry } | undefined;

/**
 * The process's telemetry: a no-op without APPLICATIONINSIGHTS_CONNECTION_STRING. Set up once:
 * later calls with the same settings return the same object (applicationinsights keeps exporters
 * and timers per client; one per process is what it expects).
 */
export function getTelemetry(env: NodeJS.ProcessEnv = process.env): Telemetry {
  const connectionString = env.APPLICATIONINSIGHTS_CONNECTION_STRING?.trim();
  if (!connectionString) return NO_TELEMETRY;
  const key = `${connectionString}|${env.APPLICATIONINSIGHTS_AUTHENTICATION_STRING ?? ""}`;
  if (current?.key === key) return current.telemetry;
  try {
    // Loaded only when configured: the SDK pulls in OpenTelemetry, which the CLI rarely needs.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const ai = require("applicationinsights") as typeof import("applicationinsights");
    // useGlobalProviders false: an isolated client that sends what it is given and patches no
    // global (http, console); the Functions host already collects requests and logs itself.
    const client = new ai.TelemetryClient(connectionString, {
      useGlobalProviders: false,
    }) as unknown as Client;
    // No disk retry cache: Flex Consumption instances are ephemeral, and a cache would leave
    // files and a retry loop behind every short CLI process.
    client.config.enableUseDiskRetryCaching = false;
    const auth = parseAuthenticationString(env.APPLICATIONINSIGHTS_AUTHENTICATION_STRING);
    if (auth.aad) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { ManagedIdentityCredential } = require("@azure/identity") as typeof import("@azure/identity");
      client.config.aadTokenCredential = auth.clientId
        ? new ManagedIdentityCredential({ clientId: auth.clientId })
        : new ManagedIdentityCredential();
    }
    const previous = current;
    current = { key, telemetry: new AppInsightsTelemetry(client) };
    if (previous) void previous.telemetry.client.shutdown().catch(() => undefined);
    return current.telemetry;
  } catch {
    return NO_TELEMETRY;
  }
}

/** Called once when the app's process starts: sets telemetry up if it is configured, else nothing. */
export function setupTelemetry(env: NodeJS.ProcessEnv = process.env): void {
  getTelemetry(env);
}

/** Sends what is buffered and stops the client (tests, a local host stopping). Never rejects. */
export async function shutdownTelemetry(): Promise<void> {
  const telemetry = current?.telemetry;
  current = undefined;
  if (!telemetry) return;
  await telemetry.flush();
  await telemetry.client.shutdown().catch(() => undefined);
}

/**
 * The engine's `runEnded` hook (lib/backup/run.ts RunHooks): reports each finished run with the
 * disk's interval, its own or the schedule's. Synchronous and never throws.
 */
export function reportRunEnded(
  env: NodeJS.ProcessEnv,
  schedule: string,
): (run: RunRecord, disk: DiskRecord) => void {
  return (run, disk) => {
    const telemetry = getTelemetry(env);
    if (telemetry === NO_TELEMETRY) return;
    let intervalMinutes: number | undefined;
    try {
      intervalMinutes = Math.round(intervalMsOf(disk, schedule) / 60_000);
    } catch {
      // A bad schedule is the timer's error to report; the alert then uses the deployment's default.
    }
    telemetry.runEnded(run, { intervalMinutes });
  };
}

/**
 * The timer's `timerTicked` hook (lib/backup/run.ts RunHooks), or undefined without
 * APPLICATIONINSIGHTS_CONNECTION_STRING: then the tick reads nothing extra for it. Synchronous and
 * never throws.
 */
export function reportTimerTick(env: NodeJS.ProcessEnv): ((report: TimerTickReport) => void) | undefined {
  if (!env.APPLICATIONINSIGHTS_CONNECTION_STRING?.trim()) return undefined;
  return (report) => {
    try {
      getTelemetry(env).timerTicked(report);
    } catch {
      // See the module comment.
    }
  };
}
