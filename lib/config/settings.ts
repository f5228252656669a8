/**
 * One validated configuration read from the environment (app settings in Azure, the shell for the
 * CLI). Guarantees: every setting diskdelta reads is listed in SETTINGS with its default and
 * meaning; every bad value is named in a single ConfigError together with the fix; secrets
 * (account keys, connection strings) are kept out of `describeConfig` and every message.
 */
import os from "node:os";
import path from "node:path";
import { KindError } from "../core/errors";
import { parseSchedule } from "./schedule";

export type DiffMode = "auto" | "service" | "compare";
export type CopyMode = "auto" | "streamed" | "server";

export interface Config {
  /** Where the lineage lives (and later the queues). Undefined: the CLI starts the embedded Azurite. */
  storage?: StorageConnection;
  /** account name → base64 shared key, from STORAGE_ACCOUNT_KEYS. */
  accountKeys: Map<string, string>;
  diffMode: DiffMode;
  copyMode: CopyMode;
  /** Bytes of disk listed per Get Page Ranges call; see SETTINGS for why 128 MiB. */
  segmentBytes: number;
  copyConcurrency: number;
  leaseSeconds: number;
  retryAttempts: number;
  retryBaseMs: number;
  tablePrefix: string;
  home: string;
  /** Base port of the embedded Azurite (blob; queue +1, table +2). */
  embeddedPort: number;
  /** NCRONTAB (six fields, with seconds) of the backup timer. */
  schedule: string;
  httpPort: number;
  /** A change set up to this many bytes is copied by the invocation that planned it; a larger one fans out. */
  fanoutBytes: number;
  /** Planning stops and checkpoints after this long, so no invocation outlives its time limit. */
  planSeconds: number;
  /** Chunks per chunk message. */
  batchChunks: number;
  /** Listing calls in flight ahead of the copies (issue 8: listing runs ahead). */
  listLookahead: number;
  /** Longest wait for a storage response's headers, and for the next bytes of its body. */
  requestTimeoutMs: number;
  bodyStallMs: number;
  /** Hosts accepted as storage endpoints beyond the Azure clouds' blob suffixes (custom domains). */
  allowedHosts: string[];
  /** Azure Resource Manager (managed disks): its endpoint, and how often a long-running operation is polled. */
  armEndpoint: string;
  armPollMs: number;
  /** Where managed-disk snapshots go; undefined: each disk's own resource group. */
  snapshotResourceGroup?: string;
  /** Lifetime of a managed-disk snapshot's read SAS (beginGetAccess), renewed while a run still reads. */
  accessSeconds: number;
}

export type StorageConnection =
  | { kind: "connectionString"; connectionString: string }
  | { kind: "identity"; tableServiceUri: string; queueServiceUri?: string; clientId?: string };

export interface SettingInfo {
  name: string;
  default: string;
  meaning: string;
}

/** Every setting the code reads. The README and local.settings.sample.json list the same names. */
export const SETTINGS: SettingInfo[] = [
  {
    name: "AzureWebJobsStorage",
    default: "(unset: the embedded storage of DISKDELTA_HOME)",
    meaning:
      "Connection string of the storage holding the lineage tables (and the app's queues). `UseDevelopmentStorage=true` means a local Azurite on the default ports.",
  },
  {
    name: "AzureWebJobsStorage__tableServiceUri",
    default: "(unset)",
    meaning:
      "Identity-based alternative to the connection string: the table endpoint, e.g. https://acct.table.core.windows.net. `AzureWebJobsStorage__accountName` is accepted too.",
  },
  {
    name: "AzureWebJobsStorage__queueServiceUri",
    default: "(derived from the table endpoint)",
    meaning: "Queue endpoint when identity-based.",
  },
  {
    name: "AzureWebJobsStorage__clientId",
    default: "(unset)",
    meaning: "Client id of a user-assigned managed identity.",
  },
  {
    name: "STORAGE_ACCOUNT_KEYS",
    default: "(unset: identities through DefaultAzureCredential)",
    meaning:
      "Shared keys for emulator and dev accounts, `account:base64key;account2:base64key` (the syntax of AZURITE_ACCOUNTS). Never logged.",
  },
  {
    name: "DISKDELTA_DIFF_MODE",
    default: "auto",
    meaning:
      "`service` trusts the page-range diff, `compare` reads source and backup and compares, `auto` uses the diff except on endpoints known to answer it wrongly (Azurite).",
  },
  {
    name: "DISKDELTA_COPY_MODE",
    default: "auto",
    meaning:
      "`server` copies with Put Page From URL, `streamed` downloads and uploads through this process, `auto` tries server-side and falls back when the endpoint answers 501.",
  },
  {
    name: "DISKDELTA_SEGMENT_BYTES",
    default: String(128 * 1024 * 1024),
    meaning:
      "Bytes of disk per Get Page Ranges call. Azure times out listing a highly fragmented region; 150 MB is documented as safe in the worst case, 128 MiB keeps segments 4 MiB-aligned below it.",
  },
  {
    name: "DISKDELTA_COPY_CONCURRENCY",
    default: "8",
    meaning: "Chunks copied at once. Memory is bounded by this × 4 MiB.",
  },
  {
    name: "DISKDELTA_RUN_LEASE_SECONDS",
    default: "120",
    meaning:
      "How long a run's claim on its disk lasts without a heartbeat before another run may take it over.",
  },
  {
    name: "DISKDELTA_RETRY_ATTEMPTS",
    default: "6",
    meaning:
      "Tries per storage and lineage call on 408, 429, 5xx, network errors and stalled or cut bodies (exponential backoff, full jitter); the SDKs' own retries are off. Reliability says how long giving up takes.",
  },
  {
    name: "DISKDELTA_RETRY_BASE_MS",
    default: "250",
    meaning: "First backoff delay; doubles per try up to 30 s.",
  },
  {
    name: "DISKDELTA_TABLE_PREFIX",
    default: "diskdelta",
    meaning:
      "Prefix of the lineage tables (`<prefix>Disks`, `<prefix>Runs`, `<prefix>Points`) and of the fan-out progress table (`<prefix>Progress`).",
  },
  {
    name: "DISKDELTA_EMBEDDED_PORT",
    default: "10000",
    meaning:
      "Base port of the embedded storage server: blob on it, queue on +1, table on +2, on 127.0.0.1. Fixed so that disk URLs stored in the lineage stay valid from one command to the next.",
  },
  {
    name: "DISKDELTA_SCHEDULE",
    default: "0 0 */12 * * *",
    meaning:
      "NCRONTAB (sec min hour day month weekday) of the backup timer. Each run enqueues a backup of every disk that is due; a disk's own interval (intervalMinutes) overrides.",
  },
  {
    name: "DISKDELTA_HTTP_PORT",
    default: "7071",
    meaning: "Port of the local host's HTTP API (npm start), as `func start` would serve it.",
  },
  {
    name: "DISKDELTA_FANOUT_BYTES",
    default: String(256 * 1024 * 1024),
    meaning:
      "A change set up to this many bytes is copied by the invocation that planned it; beyond it the rest fans out as chunk messages to queue workers. 256 MiB copies in well under a minute at Azure's per-blob rate.",
  },
  {
    name: "DISKDELTA_PLAN_SECONDS",
    default: "240",
    meaning:
      "After this long a planning invocation checkpoints and continues in a new message, so it never reaches the Functions time limit (5 min on Consumption by default).",
  },
  {
    name: "DISKDELTA_BATCH_CHUNKS",
    default: "32",
    meaning:
      "Chunks per chunk message. 32 chunks of up to 4 MiB is 128 MiB of work per message, and the message stays far below the queue's 64 KiB limit even for fragmented chunks.",
  },
  {
    name: "APPLICATIONINSIGHTS_CONNECTION_STRING",
    default: "(unset: no telemetry is loaded or sent)",
    meaning:
      "Application Insights connection string: one event per run, per failure and per timer tick (the workbook and alerts read them). Set by the infra.",
  },
  {
    name: "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    default: "(unset: the connection string's key)",
    meaning:
      "`Authorization=AAD` (and `ClientId=<id>` for a user-assigned identity): send telemetry with the identity, as the infra sets it where local auth is disabled.",
  },
  {
    name: "DISKDELTA_LIST_LOOKAHEAD",
    default: "8",
    meaning:
      "Page-range listings in flight ahead of the copies. Listing and copying overlap, so a large sparse disk is not one listing round trip after another; memory is bounded by this × one listing's ranges.",
  },
  {
    name: "DISKDELTA_REQUEST_TIMEOUT_SECONDS",
    default: "60",
    meaning:
      "Longest wait for the headers of one blob response, or for a whole lineage (table) answer; then the request is retried like a 503 (and, after the last try, fails naming the operation, blob and range).",
  },
  {
    name: "DISKDELTA_BODY_STALL_SECONDS",
    default: "30",
    meaning:
      "Longest pause inside a download's body (a download that stops sending); the read is then cut and retried like a 503. A body closed early is retried at once.",
  },
  {
    name: "DISKDELTA_ALLOWED_HOSTS",
    default: "(none: the Azure clouds' blob endpoints only)",
    meaning:
      "Comma-separated extra host names accepted as storage endpoints (custom domains). By default only the blob endpoints of the Azure clouds (*.blob.core.windows.net, *.blob.core.usgovcloudapi.net, *.blob.core.chinacloudapi.cn, managed-disk *.blob.storage.azure.net) and, with an account key configured, loopback emulators are accepted, so no credential is ever sent to another host.",
  },
  {
    name: "DISKDELTA_ARM_ENDPOINT",
    default: "https://management.azure.com",
    meaning:
      "Azure Resource Manager endpoint for managed disks (another cloud: https://management.usgovcloudapi.net, https://management.chinacloudapi.cn); tokens are asked for `<endpoint>/.default`. HTTPS only: a bearer token never travels in the clear.",
  },
  {
    name: "DISKDELTA_ARM_POLL_MS",
    default: "2000",
    meaning:
      "Milliseconds between two polls of a long-running ARM operation (snapshot, grant and revoke of access, delete) when ARM sends no Retry-After; 2 s is the SDK's own default.",
  },
  {
    name: "DISKDELTA_SNAPSHOT_RESOURCE_GROUP",
    default: "(the disk's own resource group)",
    meaning:
      "Resource group, in each disk's subscription and region, where diskdelta keeps the incremental snapshots of managed disks; the identity needs Disk Snapshot Contributor there.",
  },
  {
    name: "DISKDELTA_ACCESS_SECONDS",
    default: "3600",
    meaning:
      "Lifetime of the read SAS of a managed-disk snapshot (beginGetAccess); a run that still reads renews it at three quarters of that, and every SAS is revoked (endGetAccess) when its reader is done. Short, because a SAS is a credential.",
  },
  {
    name: "DISKDELTA_HOME",
    default: "~/.diskdelta",
    meaning:
      "Folder of the embedded storage: its data, keys (accounts.json), lock and server log, one per user (as az keeps ~/.azure), made 0700 with 0600 files. A relative path is resolved once, against the working directory of the command that reads it; `diskdelta info` shows the folder in use and its storage server.",
  },
];

export class ConfigError extends KindError {
  /** Exit code 2 and HTTP 400, as bad input: the person who set the value can fix it. */
  readonly kind = "input" as const;

  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? `configuration error: ${problems[0]}`
        : `configuration errors:\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
    this.name = "ConfigError";
  }
}

/** The well-known development account that every Azurite serves (UseDevelopmentStorage=true); its key is public. */
export const DEV_ACCOUNT = "devstoreaccount1";
export const DEV_ACCOUNT_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/**
 * The account and key a connection string carries: a key given once in AzureWebJobsStorage also
 * reaches that account's blobs (disks and backups in the app's own account, or an emulator), so
 * it need not be repeated in STORAGE_ACCOUNT_KEYS. An entry there wins.
 */
export function connectionStringKey(
  storage: StorageConnection | undefined,
): { account: string; key: string } | undefined {
  if (storage?.kind !== "connectionString") return undefined;
  const cs = storage.connectionString;
  if (/^\s*UseDevelopmentStorage=true\s*;?\s*$/i.test(cs))
    return { account: DEV_ACCOUNT, key: DEV_ACCOUNT_KEY };
  const field = (name: string) => new RegExp(`(?:^|;)\\s*${name}=([^;]*)`, "i").exec(cs)?.[1]?.trim();
  const account = field("AccountName");
  const key = field("AccountKey");
  return account && key ? { account, key } : undefined;
}

/** Parses `account:base64key;account2:key2`. Problems are named without echoing any key. */
export function parseAccountKeys(raw: string | undefined, problems: string[]): Map<string, string> {
  const keys = new Map<string, string>();
  if (!raw || !raw.trim()) return keys;
  raw
    .split(";")
    .map((entry) => entry.trim())
    .filter(Boolean)
    .forEach((entry, index) => {
      const colon = entry.indexOf(":");
      const account = colon > 0 ? entry.slice(0, colon) : "";
      const key = colon > 0 ? entry.slice(colon + 1) : "";
      if (!/^[a-z0-9]{3,24}$/.test(account)) {
        problems.push(
          `STORAGE_ACCOUNT_KEYS entry ${index + 1} has no valid account name before ':' (expected account:base64key; account names are 3-24 lowercase letters and digits)`,
        );
      } else if (!/^[A-Za-z0-9+/]+={0,2}$/.test(key)) {
        problems.push(`STORAGE_ACCOUNT_KEYS entry for ${account} has a key that is not base64`);
      } else {
        keys.set(account, key);
      }
    });
  return keys;
}

function intSetting(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  problems: string[],
  check: (n: number) => string | undefined = () => undefined,
): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  // Decimal digits only: Number() would also take 0x10, 1e3 or " 12 " and a typo would pass.
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) {
    problems.push(`${name}=${raw} is not a positive integer (decimal digits)`);
    return fallback;
  }
  const bad = check(n);
  if (bad) problems.push(`${name}=${raw} ${bad}`);
  return n;
}

function enumSetting<T extends string>(
  env: NodeJS.ProcessEnv,
  name: string,
  allowed: readonly T[],
  fallback: T,
  problems: string[],
): T {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  problems.push(`${name}=${raw} is not one of ${allowed.join(", ")}`);
  return fallback;
}

function storageSetting(env: NodeJS.ProcessEnv, problems: string[]): StorageConnection | undefined {
  const cs = env.AzureWebJobsStorage?.trim();
  if (cs) {
    if (cs !== "UseDevelopmentStorage=true" && !/AccountName=|TableEndpoint=/i.test(cs)) {
      problems.push(
        "AzureWebJobsStorage is not a storage connection string (expected AccountName=…;AccountKey=… or UseDevelopmentStorage=true); for an identity use AzureWebJobsStorage__accountName instead",
      );
      return undefined;
    }
    return { kind: "connectionString", connectionString: cs };
  }
  const accountName = env.AzureWebJobsStorage__accountName?.trim();
  if (accountName && !/^[a-z0-9]{3,24}$/.test(accountName)) {
    problems.push(
      `AzureWebJobsStorage__accountName=${accountName} is not a storage account name (3-24 lowercase letters and digits)`,
    );
    return undefined;
  }
  let table = env.AzureWebJobsStorage__tableServiceUri?.trim();
  if (!table && accountName) table = `https://${accountName}.table.core.windows.net`;
  if (!table) return undefined;
  try {
    new URL(table);
  } catch {
    problems.push(`AzureWebJobsStorage__tableServiceUri=${table} is not a URL`);
    return undefined;
  }
  // SETTINGS documents the queue endpoint as derived from the table endpoint (any cloud's suffix).
  const queue =
    env.AzureWebJobsStorage__queueServiceUri?.trim() ||
    (/\.table\./.test(table) ? table.replace(".table.", ".queue.") : undefined);
  return {
    kind: "identity",
    tableServiceUri: table,
    queueServiceUri: queue,
    clientId: env.AzureWebJobsStorage__clientId?.trim() || undefined,
  };
}

/** The default schedule: every 12 hours, on the hour. */
export const DEFAULT_SCHEDULE = "0 0 */12 * * *";

function scheduleSetting(env: NodeJS.ProcessEnv, problems: string[]): string {
  const raw = env.DISKDELTA_SCHEDULE?.trim() || DEFAULT_SCHEDULE;
  try {
    parseSchedule(raw);
  } catch (err) {
    problems.push(`DISKDELTA_SCHEDULE: ${(err as Error).message}`);
  }
  return raw;
}

/** `~` and a relative path are resolved here, once, so every later use sees one absolute folder. */
function homeSetting(env: NodeJS.ProcessEnv): string {
  const raw = env.DISKDELTA_HOME?.trim();
  if (!raw) return path.join(os.homedir(), ".diskdelta");
  if (raw === "~" || raw.startsWith("~/")) return path.join(os.homedir(), raw.slice(1));
  return path.resolve(raw);
}

const HOST_NAME =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** Resource group names as ARM takes them: 1-90 of letters, digits, `_ - . ( )`, not ending in a period. */
const RESOURCE_GROUP = /^[-\w.()]{0,89}[-\w()]$/;

function armEndpointSetting(env: NodeJS.ProcessEnv, problems: string[]): string {
  const raw = env.DISKDELTA_ARM_ENDPOINT?.trim() || "https://management.azure.com";
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    problems.push(`DISKDELTA_ARM_ENDPOINT=${raw} is not a URL (e.g. https://management.azure.com)`);
    return raw;
  }
  if (url.protocol !== "https:" || url.search || url.username || url.password || url.pathname !== "/")
    problems.push(
      `DISKDELTA_ARM_ENDPOINT=${raw} must be an https origin without path or query (e.g. https://management.azure.com): ARM tokens travel over TLS only`,
    );
  return url.origin;
}

function snapshotGroupSetting(env: NodeJS.ProcessEnv, problems: string[]): string | undefined {
  const raw = env.DISKDELTA_SNAPSHOT_RESOURCE_GROUP?.trim();
  if (!raw) return undefined;
  if (!RESOURCE_GROUP.test(raw))
    problems.push(
      `DISKDELTA_SNAPSHOT_RESOURCE_GROUP=${raw} is not a resource group name (1-90 letters, digits, _ - . ( ), not ending in a period)`,
    );
  return raw;
}

function hostsSetting(env: NodeJS.ProcessEnv, problems: string[]): string[] {
  const raw = env.DISKDELTA_ALLOWED_HOSTS?.trim();
  if (!raw) return [];
  const hosts = raw
    .split(",")
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  for (const h of hosts) {
    if (!HOST_NAME.test(h))
      problems.push(`DISKDELTA_ALLOWED_HOSTS: "${h}" is not a host name (no scheme, port or path)`);
  }
  return hosts;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const config: Config = {
    storage: storageSetting(env, problems),
    accountKeys: parseAccountKeys(env.STORAGE_ACCOUNT_KEYS, problems),
    diffMode: enumSetting(
      env,
      "DISKDELTA_DIFF_MODE",
      ["auto", "service", "compare"] as const,
      "auto",
      problems,
    ),
    copyMode: enumSetting(
      env,
      "DISKDELTA_COPY_MODE",
      ["auto", "streamed", "server"] as const,
      "auto",
      problems,
    ),
    segmentBytes: intSetting(env, "DISKDELTA_SEGMENT_BYTES", 128 * 1024 * 1024, problems, (n) =>
      n % (4 * 1024 * 1024) === 0
        ? undefined
        : "must be a multiple of 4 MiB (4194304) so segments align with chunks",
    ),
    copyConcurrency: intSetting(env, "DISKDELTA_COPY_CONCURRENCY", 8, problems, (n) =>
      n <= 256 ? undefined : "is above 256; memory is concurrency × 4 MiB",
    ),
    leaseSeconds: intSetting(env, "DISKDELTA_RUN_LEASE_SECONDS", 120, problems, (n) =>
      n >= 3 ? undefined : "is below 3 seconds; heartbeats could not keep up",
    ),
    retryAttempts: intSetting(env, "DISKDELTA_RETRY_ATTEMPTS", 6, problems),
    retryBaseMs: intSetting(env, "DISKDELTA_RETRY_BASE_MS", 250, problems),
    tablePrefix: env.DISKDELTA_TABLE_PREFIX?.trim() || "diskdelta",
    home: homeSetting(env),
    schedule: scheduleSetting(env, problems),
    httpPort: intSetting(env, "DISKDELTA_HTTP_PORT", 7071, problems, (n) =>
      n <= 65535 ? undefined : "is not a port number",
    ),
    fanoutBytes: intSetting(env, "DISKDELTA_FANOUT_BYTES", 256 * 1024 * 1024, problems),
    planSeconds: intSetting(env, "DISKDELTA_PLAN_SECONDS", 240, problems),
    batchChunks: intSetting(env, "DISKDELTA_BATCH_CHUNKS", 32, problems, (n) =>
      n <= 64 ? undefined : "is above 64; a message must stay far below the queue's 64 KiB limit",
    ),
    embeddedPort: intSetting(env, "DISKDELTA_EMBEDDED_PORT", 10000, problems, (n) =>
      n <= 65533 ? undefined : "is not a port number with two more above it (at most 65533)",
    ),
    listLookahead: intSetting(env, "DISKDELTA_LIST_LOOKAHEAD", 8, problems, (n) =>
      n <= 64 ? undefined : "is above 64; more listings at once only add memory",
    ),
    requestTimeoutMs: 1000 * intSetting(env, "DISKDELTA_REQUEST_TIMEOUT_SECONDS", 60, problems),
    bodyStallMs: 1000 * intSetting(env, "DISKDELTA_BODY_STALL_SECONDS", 30, problems),
    allowedHosts: hostsSetting(env, problems),
    armEndpoint: armEndpointSetting(env, problems),
    armPollMs: intSetting(env, "DISKDELTA_ARM_POLL_MS", 2000, problems, (n) =>
      n <= 60_000 ? undefined : "is above a minute; ARM's own Retry-After is seconds",
    ),
    snapshotResourceGroup: snapshotGroupSetting(env, problems),
    accessSeconds: intSetting(env, "DISKDELTA_ACCESS_SECONDS", 3600, problems, (n) =>
      n <= 24 * 3600 ? undefined : "is above a day; a SAS is a credential, keep it short",
    ),
  };
  if (!/^[A-Za-z][A-Za-z0-9]{2,40}$/.test(config.tablePrefix)) {
    problems.push(
      `DISKDELTA_TABLE_PREFIX=${config.tablePrefix} must be 3-41 letters and digits, starting with a letter (table names)`,
    );
  }
  if (problems.length) throw new ConfigError(problems);
  const own = connectionStringKey(config.storage);
  if (own && !config.accountKeys.has(own.account)) config.accountKeys.set(own.account, own.key);
  return config;
}
