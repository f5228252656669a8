/**
 * The embedded default: with no AzureWebJobsStorage, diskdelta serves itself from an Azurite
 * persisted under DISKDELTA_HOME, with the walkthrough's accounts (mypremiumaccount,
 * mybackupstdaccount) and devstoreaccount1 for the lineage. Keys are random per home folder,
 * kept in `accounts.json` (mode 0600), never printed. Ports are fixed (10000-10002 by default) so
 * the disk URLs stored in the lineage stay valid from one command to the next; a second command
 * started while the first is serving reuses the first one's servers instead of fighting over the
 * data files.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { DEV_ACCOUNT, DEV_ACCOUNT_KEY, startAzurite, type RunningAzurite } from "./azurite";

export const EMBEDDED_ACCOUNTS = ["mypremiumaccount", "mybackupstdaccount"];

export interface EmbeddedStorage {
  /** AzureWebJobsStorage for the lineage. */
  connectionString: string;
  /** account → key, for STORAGE_ACCOUNT_KEYS. */
  keys: Map<string, string>;
  blobUrl(account: string): string;
  /** Whether this process serves (and must keep running while others use it). */
  serving: boolean;
  close(): Promise<void>;
}

interface ServingFile {
  pid: number;
  blobPort: number;
  queuePort: number;
  tablePort: number;
}

function loadOrCreateKeys(home: string): Record<string, string> {
  const file = path.join(home, "accounts.json");
  let keys: Record<string, string> = {};
  if (fs.existsSync(file)) keys = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, string>;
  let changed = false;
  for (const account of EMBEDDED_ACCOUNTS) {
    if (!keys[account]) {
      keys[account] = crypto.randomBytes(64).toString("base64");
      changed = true;
    }
  }
  if (changed) fs.writeFileSync(file, JSON.stringify(keys, null, 2), { mode: 0o600 });
  return keys;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

export async function startEmbedded(home: string, blobPort: number): Promise<EmbeddedStorage> {
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  const keys = loadOrCreateKeys(home);
  const servingPath = path.join(home, "serving.json");
  const ports = { blobPort, queuePort: blobPort + 1, tablePort: blobPort + 2 };
  let azurite: RunningAzurite | undefined;
  let serving = false;
  const other = fs.existsSync(servingPath)
    ? (JSON.parse(fs.readFileSync(servingPath, "utf8")) as ServingFile)
    : undefined;
  if (other && other.pid !== process.pid && alive(other.pid) && (await portInUse(other.blobPort))) {
    Object.assign(ports, {
      blobPort: other.blobPort,
      queuePort: other.queuePort,
      tablePort: other.tablePort,
    });
  } else {
    for (const port of [ports.blobPort, ports.queuePort, ports.tablePort]) {
      if (await portInUse(port)) {
        throw new Error(
          `the embedded storage needs port ${port}, which another program uses; stop it, set DISKDELTA_EMBEDDED_PORT to another base port, or point AzureWebJobsStorage at your storage`,
        );
      }
    }
    azurite = await startAzurite({ accounts: keys, location: path.join(home, "azurite"), ...ports });
    fs.writeFileSync(servingPath, JSON.stringify({ pid: process.pid, ...ports }));
    serving = true;
  }
  const base = (port: number, account: string) => `http://127.0.0.1:${port}/${account}`;
  const allKeys = new Map(Object.entries({ ...keys, [DEV_ACCOUNT]: DEV_ACCOUNT_KEY }));
  return {
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_ACCOUNT_KEY};` +
      `BlobEndpoint=${base(ports.blobPort, DEV_ACCOUNT)};QueueEndpoint=${base(ports.queuePort, DEV_ACCOUNT)};` +
      `TableEndpoint=${base(ports.tablePort, DEV_ACCOUNT)};`,
    keys: allKeys,
    blobUrl: (account) => base(ports.blobPort, account),
    serving,
    close: async () => {
      if (!azurite) return;
      await azurite.close();
      try {
        const current = JSON.parse(fs.readFileSync(servingPath, "utf8")) as ServingFile;
        if (current.pid === process.pid) fs.unlinkSync(servingPath);
      } catch {
        // already gone
      }
    },
  };
}
