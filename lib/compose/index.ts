/**
 * The composition root: the one place that builds the app from its configuration — credentials,
 * the storage port (Azure SDK, wrapped in the retry policy), the lineage (Azure Tables), the
 * sources of disks, the app's queues, and the hooks around runs (digests and retention after a
 * seal, telemetry at a run's end and a timer's tick). With no AzureWebJobsStorage it first
 * attaches to the embedded storage (an Azurite shared by every diskdelta process of the data
 * folder). Only entry points import it: functions/, the CLI, the local host. `close()` stops
 * whatever was started here.
 */
import type { TokenCredential } from "@azure/identity";
import type { QueueClient } from "@azure/storage-queue";
import type { App } from "../app/context";
import { afterSeal } from "../backup/afterSeal";
import { setOwnerRole, type OwnerRole } from "../backup/claim";
import { ArmClients } from "../azure/arm";
import { AzureCredentials } from "../azure/credentials";
import { loadConfig, type Config } from "../config/settings";
import { errorInfo, retryingPort, type RetryPolicy } from "../core/retry";
import type { Logger } from "../core/logger";
import { systemClock } from "../core/logger";
import { openTableLineage } from "../lineage/tableStore";
import type { Lineage } from "../lineage/types";
import { queueClient, storageQueueSender } from "../queues/sender";
import { SourceCatalog } from "../sources/catalog";
import { ManagedDiskCatalog } from "../sources/managedDisk";
import { AzureStore } from "../storage/azure";
import { retrying } from "../storage/retrying";
import { reportRunEnded, reportTimerTick } from "../telemetry";

export interface Engine extends App {
  /** The embedded storage this process attached to, if it did. */
  embedded?: {
    connectionString: string;
    keys: Map<string, string>;
    blobUrl(account: string): string;
    serving: boolean;
    close(): Promise<void>;
  };
  credentials: AzureCredentials;
  /** A client of one of the app's queues (the local host receives through these). */
  queueClient(name: string): QueueClient;
  close(): Promise<void>;
}

export interface EngineOptions {
  /** A token credential instead of DefaultAzureCredential (tests: one that records its calls). */
  identity?: TokenCredential;
  /** What kind of process this is, for the busy message of a disk it holds. */
  role?: OwnerRole;
  /**
   * Azure Resource Manager for managed disks: another endpoint than DISKDELTA_ARM_ENDPOINT, and a
   * certificate to trust for it in this engine only (tests: a local fake's). A child process gets
   * the same through DISKDELTA_ARM_ENDPOINT and NODE_EXTRA_CA_CERTS.
   */
  arm?: { endpoint?: string; ca?: string };
}

export function retryPolicy(config: Config, log: Logger): RetryPolicy {
  return {
    attempts: config.retryAttempts,
    baseMs: config.retryBaseMs,
    onRetry: (err, attempt, delay) => {
      const { code, status, message } = errorInfo(err);
      log.warn(
        `retrying after ${code ?? status ?? "error"} (try ${attempt} of ${config.retryAttempts}, waiting ${Math.round(delay)} ms): ${message}`,
      );
    },
  };
}

export async function openEngine(
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
  options: EngineOptions = {},
): Promise<Engine> {
  if (options.role) setOwnerRole(options.role);
  let config: Config = loadConfig(env);
  let embedded: Engine["embedded"];
  if (!config.storage) {
    // The emulator is a development dependency: loaded only when the embedded default is used.
    const { attachEmbedded } = await import("./embedded");
    embedded = await attachEmbedded(config, log);
    config = {
      ...config,
      storage: { kind: "connectionString", connectionString: embedded.connectionString },
      accountKeys: new Map([...embedded.keys, ...config.accountKeys]),
    };
  }
  const credentials = new AzureCredentials(config, options.identity);
  const policy = retryPolicy(config, log);
  const storage = retrying(
    new AzureStore(credentials, {
      requestTimeoutMs: config.requestTimeoutMs,
      bodyStallMs: config.bodyStallMs,
    }),
    policy,
  );
  const lineage: Lineage = retryingPort(
    openTableLineage(config.storage!, credentials, config.tablePrefix),
    policy,
  );
  try {
    await lineage.ensureTables();
  } catch (err) {
    await embedded?.close();
    throw err;
  }
  const queueFor = (name: string) => queueClient(config.storage!, credentials, name);
  return {
    config,
    log,
    now: systemClock,
    storage,
    lineage,
    sources: new SourceCatalog(
      storage,
      credentials,
      new ManagedDiskCatalog(
        new ArmClients(() => credentials.identity(), {
          endpoint: options.arm?.endpoint ?? config.armEndpoint,
          pollMs: config.armPollMs,
          retryAttempts: config.retryAttempts,
          retryBaseMs: config.retryBaseMs,
          ca: options.arm?.ca,
        }),
        storage,
        { snapshotResourceGroup: config.snapshotResourceGroup, accessSeconds: config.accessSeconds, log },
      ),
    ),
    hosts: credentials,
    queues: storageQueueSender(queueFor),
    hooks: { afterSeal, runEnded: reportRunEnded(env, config.schedule) },
    timerTicked: reportTimerTick(env),
    embedded,
    credentials,
    queueClient: queueFor,
    close: async () => {
      await embedded?.close();
    },
  };
}
