/**
 * The embedded default: with no AzureWebJobsStorage, diskdelta uses an Azurite persisted under
 * DISKDELTA_HOME, with the walkthrough's accounts (mypremiumaccount, mybackupstdaccount) and
 * devstoreaccount1 for the lineage. Keys are random per data folder, kept in `accounts.json`
 * (mode 0600), never printed. Ports are fixed (10000-10002 by default) so the disk URLs stored in
 * the lineage stay valid from one command to the next.
 *
 * Any number of diskdelta processes (CLI commands, `npm start`, `diskdelta worker`), started in any
 * order and at any moment, share one data folder safely, because none of them runs Azurite itself:
 *
 * - One storage server per data folder (server.ts), a detached process that outlives the command
 *   that started it. It serves only while it holds the folder's lock (lock.ts: epochs taken with
 *   an exclusive link, a stale one — dead pid, other program, refused control port, earlier boot —
 *   taken over without deleting anything), so two Azurites never write one folder.
 * - Each process is a client: it connects to the server's control port and says hello; the open
 *   connection is its lease (a dead process's socket is closed by the kernel, so leases never go
 *   stale). The server stops a few seconds after the last lease ends, flushing its data before it
 *   lets the next server take the lock. A command's end therefore never takes the storage away
 *   from another command, and the next command within the idle period finds the server warm.
 * - A process that finds no live server starts one and waits for its hello to be answered (the
 *   answer comes once Azurite listens). It gives up after WAIT_MS at most, and at once when the
 *   answer is an error (a port taken by another program or by diskdelta's server of another data
 *   folder, named with its pid and folder; azurite not installed; Azurite failing on its data), with
 *   one line saying why and what to do. It never hangs.
 * - If the server dies under a client (killed), the client starts a new one in the background on
 *   the same ports, so its storage calls' own retries can reach it.
 *
 * The data folder and its top-level files are made private (0700/0600) on every open; the server
 * tightens the whole tree when it starts (folder.ts).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import type net from "node:net";
import path from "node:path";
import { DEV_ACCOUNT, DEV_ACCOUNT_KEY } from "./azurite";
import { EMBEDDED_ACCOUNTS, folderPaths, openDataFolder, PRIVATE_FILE, readKeys } from "./folder";
import {
  controlCall,
  currentLock,
  mayBeServing,
  portClashMessage,
  portHolder,
  portsFrom,
  portStillBusy,
  type Ports,
} from "./lock";

export { EMBEDDED_ACCOUNTS };

/** How long the server stays after its last client: long enough for the next command of a script. */
export const DEFAULT_IDLE_MS = 5000;
/** The longest a process waits for the storage before it fails (a cold start takes 1-3 s). */
export const WAIT_MS = 15_000;

export interface EmbeddedStorage {
  /** AzureWebJobsStorage for the lineage. */
  connectionString: string;
  /** account → key, for STORAGE_ACCOUNT_KEYS. */
  keys: Map<string, string>;
  blobUrl(account: string): string;
  /**
   * Whether this process serves (and must keep running while others use it). Always false now:
   * the storage server is a process of its own, which stays while any client needs it.
   */
  serving: boolean;
  /** The storage server this process is a client of, for `diskdelta info`-like output. */
  server: { pid: number; dataFolder: string; log: string };
  /** Ends this process's lease; the server stops once no client is left. */
  close(): Promise<void>;
}

export interface EmbeddedOptions {
  /** The idle period of a server this process starts (tests shorten it). */
  idleMs?: number;
  /** Longest wait for the storage. */
  waitMs?: number;
}

interface Attached extends Ports {
  socket: net.Socket;
  pid: number;
}

const sleep = (ms: number, background: boolean) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (background) timer.unref();
  });

function serverScript(): string {
  const candidates = [
    path.join(__dirname, "server.js"),
    // Loaded from the TypeScript sources (ts-jest): the compiled server next to them in dist/.
    path.resolve(__dirname, "../../dist/lib/emulator/server.js"),
  ];
  const found = candidates.find((file) => fs.existsSync(file));
  if (!found)
    throw new Error(
      `the embedded storage server is not built (${candidates[0]} is missing); run npm run build`,
    );
  return found;
}

/** Starts a server for the folder, detached: it must outlive this process. */
function spawnServer(home: string, blobPort: number, idleMs: number, problems: string[]): void {
  const out = fs.openSync(folderPaths(home).log, "a", PRIVATE_FILE);
  try {
    const child = spawn(process.execPath, [serverScript(), home, String(blobPort), String(idleMs)], {
      cwd: home,
      detached: true,
      stdio: ["ignore", out, out],
      windowsHide: true,
    });
    child.on("error", (err) => problems.push(`cannot start ${process.execPath}: ${err.message}`));
    child.unref();
  } finally {
    fs.closeSync(out);
  }
}

/**
 * Becomes a client of the folder's server, starting one when none serves. `background`: a
 * reattach after the server died, which must not keep a finished process alive.
 */
async function attach(
  home: string,
  blobPort: number,
  options: Required<EmbeddedOptions>,
  background = false,
): Promise<Attached> {
  const paths = folderPaths(home);
  const deadline = Date.now() + options.waitMs;
  const refused = new Set<number>();
  const problems: string[] = [];
  let spawnedAt = -Infinity;
  let waitingFor = "no server took the lock";
  while (true) {
    const remaining = deadline - Date.now();
    if (remaining <= 0)
      throw new Error(
        `the embedded storage of ${home} was not ready within ${options.waitMs / 1000} s: ` +
          `${problems.at(-1) ?? waitingFor}; see ${paths.log}, or point AzureWebJobsStorage at your storage`,
      );
    const lock = currentLock(home);
    if (lock && mayBeServing(lock) && !refused.has(lock.epoch)) {
      const call = controlCall(
        lock.controlPort,
        { op: "hello", token: lock.token, pid: process.pid },
        remaining,
        background,
      );
      const reply = await call.reply;
      if ("ok" in reply && reply.ok === true) {
        const ports = portsFrom(Number(reply.blobPort));
        return { socket: call.socket, pid: lock.pid, ...ports };
      }
      call.socket.destroy();
      if ("error" in reply && typeof reply.error === "string") throw new Error(reply.error);
      if ("refused" in reply) {
        refused.add(lock.epoch); // its holder no longer serves: start a server that takes over
        continue;
      }
      waitingFor =
        "closing" in reply
          ? `the server pid ${lock.pid} is stopping`
          : "timeout" in reply
            ? `the server pid ${lock.pid} did not answer`
            : `the server pid ${lock.pid} closed the connection`;
      await sleep(50, background);
      continue;
    }
    // No server: check the ports first, so that a program holding one is named within a moment.
    const busy = await portStillBusy(portsFrom(blobPort), lock);
    if (busy) {
      const now = currentLock(home);
      // A server of this folder took the lock since: it is the one binding the ports.
      if (now && (now.epoch !== lock?.epoch || now.state !== lock.state) && mayBeServing(now)) continue;
      const holder = await portHolder(busy[1]);
      if (!holder || holder.home !== home) throw new Error(portClashMessage(busy[0], busy[1], holder));
      // This folder's previous server, still closing its ports.
      waitingFor = `the previous server pid ${holder.pid} still holds port ${busy[1]}`;
      await sleep(100, background);
      continue;
    }
    if (Date.now() - spawnedAt > 1000) {
      spawnServer(home, blobPort, options.idleMs, problems);
      spawnedAt = Date.now();
      waitingFor = "the server started did not take the lock";
    }
    await sleep(50, background);
  }
}

export async function startEmbedded(
  home: string,
  blobPort: number,
  options: EmbeddedOptions = {},
): Promise<EmbeddedStorage> {
  const folder = openDataFolder(home);
  const settings = { idleMs: options.idleMs ?? DEFAULT_IDLE_MS, waitMs: options.waitMs ?? WAIT_MS };
  let attached = await attach(folder, blobPort, settings);
  let closed = false;
  // The lease lasts as long as the process or until close(); it never keeps the process alive.
  const keep = (socket: net.Socket) => {
    socket.unref();
    socket.on("error", () => undefined);
    socket.once("close", () => {
      if (closed) return;
      // The server died under us (killed): start the next one on the same ports, quietly.
      attach(folder, attached.blobPort, settings, true).then(
        (again) => {
          attached = again;
          if (closed) again.socket.destroy();
          else keep(again.socket);
        },
        () => undefined,
      );
    });
  };
  keep(attached.socket);
  const keys = readKeys(folder);
  const ports: Ports = { ...attached };
  const base = (port: number, account: string) => `http://127.0.0.1:${port}/${account}`;
  const allKeys = new Map(Object.entries({ ...keys, [DEV_ACCOUNT]: DEV_ACCOUNT_KEY }));
  return {
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_ACCOUNT_KEY};` +
      `BlobEndpoint=${base(ports.blobPort, DEV_ACCOUNT)};QueueEndpoint=${base(ports.queuePort, DEV_ACCOUNT)};` +
      `TableEndpoint=${base(ports.tablePort, DEV_ACCOUNT)};`,
    keys: allKeys,
    blobUrl: (account) => base(ports.blobPort, account),
    serving: false,
    get server() {
      return { pid: attached.pid, dataFolder: folder, log: folderPaths(folder).log };
    },
    close: async () => {
      closed = true;
      attached.socket.end();
    },
  };
}
