/**
 * Starts Azurite (blob, queue and table) inside this process, for the embedded default and for
 * tests. Guarantees: the servers listen on 127.0.0.1 only; every account given is served with
 * its key (plus the well-known devstoreaccount1); `close()` stops all three and, for disk
 * persistence, flushes Azurite's metadata so state survives to the next start.
 *
 * Azurite's package root imports `vscode`, so its servers are deep-imported; it ships no type
 * declarations, hence the narrow local interfaces below. Azurite's own telemetry is only started
 * by its CLI entry points, which we do not use, so nothing leaves the machine.
 */
import fs from "node:fs";
import path from "node:path";

import { DEV_ACCOUNT, DEV_ACCOUNT_KEY } from "../config/settings";

export { DEV_ACCOUNT, DEV_ACCOUNT_KEY };

export interface AzuriteOptions {
  /** Extra accounts, name → base64 key. */
  accounts: Record<string, string>;
  /** Folder for persistent data; omitted means in memory. */
  location?: string;
  /** Ports; 0 (the default) picks free ones. */
  blobPort?: number;
  queuePort?: number;
  tablePort?: number;
}

export interface RunningAzurite {
  blobPort: number;
  queuePort: number;
  tablePort: number;
  /** Path-style service URL of an account, e.g. http://127.0.0.1:10000/acct */
  blobUrl(account: string): string;
  queueUrl(account: string): string;
  tableUrl(account: string): string;
  /** A connection string for an account served by this emulator (key included: never log it). */
  connectionString(account: string, key: string): string;
  close(): Promise<void>;
}

interface AzuriteServer {
  start(): Promise<void>;
  close(): Promise<void>;
  getHttpServerAddress(): string;
}
type ServerCtor = new (config: unknown) => AzuriteServer;
type ConfigCtor = new (...args: unknown[]) => unknown;

function load<T>(modulePath: string): T {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require(modulePath) as { default: T }).default;
}

function portOf(address: string): number {
  const match = /:(\d+)\/?$/.exec(address);
  if (!match) throw new Error(`cannot read the port of Azurite's address ${address}`);
  return Number(match[1]);
}

export function accountsEnvValue(accounts: Record<string, string>): string {
  const all = { [DEV_ACCOUNT]: DEV_ACCOUNT_KEY, ...accounts };
  return Object.entries(all)
    .map(([name, key]) => `${name}:${key}`)
    .join(";");
}

export async function startAzurite(options: AzuriteOptions): Promise<RunningAzurite> {
  // Azurite reads its accounts from this variable when its account store is built.
  process.env.AZURITE_ACCOUNTS = accountsEnvValue(options.accounts);
  const inMemory = options.location === undefined;
  const loc = options.location ?? "";
  if (!inMemory) fs.mkdirSync(loc, { recursive: true });
  const at = (name: string) => (inMemory ? name : path.join(loc, name));

  const BlobConfiguration = load<ConfigCtor>("azurite/dist/src/blob/BlobConfiguration");
  const BlobServer = load<ServerCtor>("azurite/dist/src/blob/BlobServer");
  const QueueConfiguration = load<ConfigCtor>("azurite/dist/src/queue/QueueConfiguration");
  const QueueServer = load<ServerCtor>("azurite/dist/src/queue/QueueServer");
  const TableConfiguration = load<ConfigCtor>("azurite/dist/src/table/TableConfiguration");
  const TableServer = load<ServerCtor>("azurite/dist/src/table/TableServer");

  const host = "127.0.0.1";
  const keepAlive = 5;
  const blob = new BlobServer(
    new BlobConfiguration(
      host,
      options.blobPort ?? 0,
      keepAlive,
      at("__azurite_db_blob__.json"),
      at("__azurite_db_blob_extent__.json"),
      [{ locationId: "Default", locationPath: at("__blobstorage__"), maxConcurrency: 10 }],
      false,
      undefined,
      false,
      undefined,
      false, // loose
      true, // skipApiVersionCheck: newer SDKs send versions Azurite does not list yet
      "",
      "",
      "",
      undefined,
      false,
      inMemory,
    ),
  );
  const queue = new QueueServer(
    new QueueConfiguration(
      host,
      options.queuePort ?? 0,
      keepAlive,
      at("__azurite_db_queue__.json"),
      at("__azurite_db_queue_extent__.json"),
      [{ locationId: "Default", locationPath: at("__queuestorage__"), maxConcurrency: 10 }],
      false,
      undefined,
      false,
      undefined,
      false,
      true,
      "",
      "",
      "",
      undefined,
      false,
      inMemory,
    ),
  );
  const table = new TableServer(
    new TableConfiguration(
      host,
      options.tablePort ?? 0,
      keepAlive,
      at("__azurite_db_table__.json"),
      false,
      false,
      undefined,
      undefined,
      false,
      true,
      "",
      "",
      "",
      undefined,
      false,
      inMemory,
    ),
  );
  await Promise.all([blob.start(), queue.start(), table.start()]);
  const blobPort = portOf(blob.getHttpServerAddress());
  const queuePort = portOf(queue.getHttpServerAddress());
  const tablePort = portOf(table.getHttpServerAddress());
  const base = (port: number, account: string) => `http://${host}:${port}/${account}`;
  return {
    blobPort,
    queuePort,
    tablePort,
    blobUrl: (account) => base(blobPort, account),
    queueUrl: (account) => base(queuePort, account),
    tableUrl: (account) => base(tablePort, account),
    connectionString: (account, key) =>
      `DefaultEndpointsProtocol=http;AccountName=${account};AccountKey=${key};` +
      `BlobEndpoint=${base(blobPort, account)};QueueEndpoint=${base(queuePort, account)};` +
      `TableEndpoint=${base(tablePort, account)};`,
    close: async () => {
      await Promise.all([blob.close(), queue.close(), table.close()]);
    },
  };
}
