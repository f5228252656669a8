/**
 * Who serves a data folder: the lock, the per-user registry of running servers, and the control
 * protocol between the storage server (server.ts) and its clients (embedded.ts).
 *
 * The lock is a sequence of epochs, `<home>/server/lock.<n>.json`, each holding one server's pid,
 * ports, control port and a random token. The newest epoch is the lock. A server takes epoch n+1
 * only when epoch n is over (released, its pid dead, a pid of another program, or a control port
 * that refuses connections), by linking a fully written temporary file to `lock.<n+1>.json`: the
 * link fails when the name exists (O_EXCL semantics) and never shows half a file. After winning,
 * the server looks again and yields if a newer epoch exists. Epoch files are never deleted while
 * newest, so a takeover cannot remove somebody else's fresh lock: the race of "read stale lock,
 * delete it, create mine" (two takers, each deleting the other's new lock, two servers on one
 * folder) has no delete to lose. Older epochs are swept by the winner. A release rewrites the
 * epoch in place (rename over it) as released.
 *
 * The control port (127.0.0.1, ephemeral) is open from before the lock is taken until after it is
 * released, so "connection refused" means the holder is not a serving diskdelta. Lines of JSON,
 * each request carrying the token read from the lock file (only the folder's owner can read it):
 * `hello` keeps the connection as a client lease until the client closes it or dies (the kernel
 * closes a dead process's sockets, so no lease is ever stale); the reply waits until Azurite is up.
 * `who` names the server (pid, folder, ports) for a port-clash message.
 *
 * The registry, a private folder per user in the temporary directory, lists running servers by
 * pid, so that a command that finds its port taken can say whether diskdelta's own server of
 * another data folder holds it.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { folderPaths, PRIVATE_DIR, PRIVATE_FILE, writePrivate } from "./folder";

export interface Ports {
  blobPort: number;
  queuePort: number;
  tablePort: number;
}

export interface LockRecord extends Ports {
  epoch: number;
  pid: number;
  /** The data folder's real path. */
  home: string;
  controlPort: number;
  token: string;
  bootId: string;
  startedAt: string;
  state: "held" | "released" | "failed";
  /** Why the server could not start (state failed). */
  error?: string;
  endedAt?: string;
}

export function portsFrom(blobPort: number): Ports {
  return { blobPort, queuePort: blobPort + 1, tablePort: blobPort + 2 };
}

export function portList(p: Ports): [string, number][] {
  return [
    ["blob", p.blobPort],
    ["queue", p.queuePort],
    ["table", p.tablePort],
  ];
}

/** Tells one boot of the machine from the next: a lock from before a restart is over. */
export function bootId(): string {
  try {
    return fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    // Elsewhere, the boot time to the minute (uptime is whole seconds; clocks drift a little).
    return `boot@${Math.round((Date.now() - os.uptime() * 1000) / 60_000)}`;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The command line of a process where the system shows it (Linux), else undefined. */
function commandLine(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
  } catch {
    return undefined;
  }
}

/** The checks that need no network: is this epoch's holder possibly still serving? */
export function mayBeServing(record: LockRecord): boolean {
  if (record.state !== "held") return false;
  if (record.bootId !== bootId()) return false;
  if (!pidAlive(record.pid)) return false;
  const cmd = commandLine(record.pid);
  // A pid reused by another program (after a kill -9 of the server) is not the server.
  if (cmd !== undefined && !(cmd.includes("server.js") || cmd.includes("server.ts"))) return false;
  return true;
}

const LOCK_NAME = /^lock\.(\d+)\.json$/;

/** The newest epoch, or undefined when none was ever taken. */
export function currentLock(home: string): LockRecord | undefined {
  const dir = folderPaths(home).locks;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  const epochs = names
    .map((n) => LOCK_NAME.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  if (epochs.length === 0) return undefined;
  const epoch = epochs[0];
  try {
    const record = JSON.parse(fs.readFileSync(path.join(dir, `lock.${epoch}.json`), "utf8")) as LockRecord;
    return { ...record, epoch };
  } catch {
    // Unreadable: over, so that the next server takes epoch + 1 instead of waiting forever.
    return {
      epoch,
      pid: 0,
      home,
      controlPort: 0,
      token: "",
      bootId: "",
      startedAt: "",
      state: "released",
      ...portsFrom(0),
    };
  }
}

const lockFile = (home: string, epoch: number) => path.join(folderPaths(home).locks, `lock.${epoch}.json`);

export type Reply = Record<string, unknown>;

export interface ControlCall {
  /** The first reply line, or why there is none. */
  reply: Promise<Reply | { refused: true } | { closed: true } | { timeout: true }>;
  socket: net.Socket;
}

/** Sends one request line; the socket stays open (a hello is a lease for as long as it is). */
export function controlCall(port: number, request: Reply, timeoutMs: number, unref = false): ControlCall {
  const socket = net.connect({ host: "127.0.0.1", port });
  if (unref) socket.unref();
  const reply = new Promise<Awaited<ControlCall["reply"]>>((resolve) => {
    let buffer = "";
    let connected = false;
    const timer = setTimeout(() => resolve({ timeout: true }), timeoutMs);
    timer.unref();
    socket.setEncoding("utf8");
    socket.once("connect", () => {
      connected = true;
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf("\n");
      if (end < 0) return;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buffer.slice(0, end)) as Reply);
      } catch {
        resolve({ closed: true });
      }
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(!connected && err.code === "ECONNREFUSED" ? { refused: true } : { closed: true });
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ closed: true });
    });
  });
  return { reply, socket };
}

/** Asks a server who it is; undefined unless it answers with the token and pid of its record. */
export async function who(record: LockRecord, timeoutMs = 1000): Promise<Reply | "refused" | undefined> {
  if (!record.controlPort) return "refused";
  const call = controlCall(record.controlPort, { op: "who", token: record.token }, timeoutMs);
  const reply = await call.reply;
  call.socket.destroy();
  if ("refused" in reply) return "refused";
  return "pid" in reply && reply.pid === record.pid ? reply : undefined;
}

/** Whether the epoch is over: what `mayBeServing` cannot tell, the control port does. */
export async function lockOver(record: LockRecord): Promise<boolean> {
  if (!mayBeServing(record)) return true;
  // An answer, or a connection accepted by a process too busy to answer, is a live holder.
  return (await who(record)) === "refused";
}

export type Acquired =
  { won: true; record: LockRecord; previous?: LockRecord } | { won: false; holder: LockRecord };

/** The server's: take the next epoch if the current one is over. */
export async function acquireLock(home: string, mine: Omit<LockRecord, "epoch">): Promise<Acquired> {
  const dir = folderPaths(home).locks;
  fs.mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR });
  for (let attempt = 0; attempt < 20; attempt++) {
    const current = currentLock(home);
    if (current && !(await lockOver(current))) return { won: false, holder: current };
    const epoch = (current?.epoch ?? 0) + 1;
    const record: LockRecord = { ...mine, epoch };
    const tmp = path.join(dir, `tmp.${process.pid}.${crypto.randomBytes(4).toString("hex")}`);
    fs.writeFileSync(tmp, JSON.stringify(record), { mode: PRIVATE_FILE, flag: "wx" });
    try {
      fs.linkSync(tmp, lockFile(home, epoch));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") continue; // another server took it first
      throw err;
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    // A server that read an older epoch may have linked a number that was swept; the newest wins.
    const newest = currentLock(home);
    if (newest && newest.epoch > epoch) {
      releaseLock(home, record, "released");
      continue;
    }
    sweep(home, epoch);
    return { won: true, record, previous: current };
  }
  throw new Error(`could not take the lock of ${home}: too many servers starting at once`);
}

/** Removes epochs older than the newest, and temporary files older than a minute. */
function sweep(home: string, newest: number): void {
  const dir = folderPaths(home).locks;
  for (const name of fs.readdirSync(dir)) {
    const m = LOCK_NAME.exec(name);
    const full = path.join(dir, name);
    try {
      if (m && Number(m[1]) < newest) fs.rmSync(full, { force: true });
      else if (name.startsWith("tmp.") && Date.now() - fs.statSync(full).mtimeMs > 60_000)
        fs.rmSync(full, { force: true });
    } catch {
      // Swept by another server at the same moment.
    }
  }
}

/** Marks an epoch over, if it is still this process's. */
export function releaseLock(home: string, record: LockRecord, state: "released" | "failed", error?: string) {
  try {
    const file = lockFile(home, record.epoch);
    const onDisk = JSON.parse(fs.readFileSync(file, "utf8")) as LockRecord;
    if (onDisk.pid !== record.pid || onDisk.token !== record.token) return;
    writePrivate(file, JSON.stringify({ ...record, state, error, endedAt: new Date().toISOString() }));
  } catch {
    // The folder is gone (deleted under a running server): nothing left to release.
  }
}

/** Whether this process still holds the newest epoch (the server checks every second). */
export function stillHeld(home: string, record: LockRecord): boolean {
  const current = currentLock(home);
  return current?.epoch === record.epoch && current.pid === record.pid && current.token === record.token;
}

// ---------------------------------------------------------------------------------------------
// The per-user registry of running servers.

function registryDir(): string | undefined {
  const user = process.getuid?.() ?? os.userInfo().username;
  const dir = path.join(os.tmpdir(), `diskdelta-${user}`);
  try {
    fs.mkdirSync(dir, { mode: PRIVATE_DIR });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") return undefined;
  }
  try {
    // The temporary directory is shared: use the folder only if it is ours and private.
    const st = fs.lstatSync(dir);
    if (!st.isDirectory()) return undefined;
    if (process.getuid && st.uid !== process.getuid()) return undefined;
    if ((st.mode & 0o077) !== 0) fs.chmodSync(dir, PRIVATE_DIR);
    return dir;
  } catch {
    return undefined;
  }
}

export function register(record: LockRecord): void {
  const dir = registryDir();
  if (!dir) return;
  try {
    writePrivate(path.join(dir, `${record.pid}.json`), JSON.stringify(record));
  } catch {
    // Best effort: the registry only improves a port-clash message.
  }
}

export function unregister(record: LockRecord): void {
  const dir = registryDir();
  if (dir) fs.rmSync(path.join(dir, `${record.pid}.json`), { force: true });
}

export interface Holder {
  pid: number;
  home: string;
}

/** The diskdelta storage server listening on `port`, if one is. */
export async function portHolder(port: number): Promise<Holder | undefined> {
  const dir = registryDir();
  if (!dir) return undefined;
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir).filter((n) => /^\d+\.json$/.test(n));
  } catch {
    return undefined;
  }
  for (const name of names) {
    const file = path.join(dir, name);
    let record: LockRecord;
    try {
      record = JSON.parse(fs.readFileSync(file, "utf8")) as LockRecord;
    } catch {
      continue;
    }
    if (!mayBeServing(record)) {
      fs.rmSync(file, { force: true });
      continue;
    }
    // A server checking its own ports is registered already; it is not the one in the way.
    if (record.pid === process.pid || !portList(record).some(([, p]) => p === port)) continue;
    const answer = await who(record);
    if (answer && answer !== "refused") return { pid: record.pid, home: record.home };
  }
  return undefined;
}

/** Resolves whether something accepts connections on 127.0.0.1:port. */
export function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** The first of the ports that something already listens on. */
export async function busyPort(ports: Ports): Promise<[string, number] | undefined> {
  for (const [name, port] of portList(ports)) if (await portAnswers(port)) return [name, port];
  return undefined;
}

/** How long the ports of a folder's previous server may stay taken: a killed process frees them last. */
export const PORT_RELEASE_MS = 3000;

/**
 * The first port still taken after waiting: at once for a port no earlier server of this folder
 * used (another program), up to PORT_RELEASE_MS for one that `previous` listed (a server that
 * stopped or died a moment ago: its control port refuses before its listening sockets close).
 */
export async function portStillBusy(
  ports: Ports,
  previous: Ports | undefined,
): Promise<[string, number] | undefined> {
  const started = Date.now();
  while (true) {
    const busy = await busyPort(ports);
    if (!busy) return undefined;
    const ours = previous && portList(previous).some(([, p]) => p === busy[1]);
    if (!ours || Date.now() - started >= PORT_RELEASE_MS) return busy;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * The one line for a port that another process holds. `holder` is diskdelta's own server when the
 * registry knows it (of another data folder: a server of this folder is never a clash).
 */
export function portClashMessage(kind: string, port: number, holder: Holder | undefined): string {
  const fixes =
    "set DISKDELTA_EMBEDDED_PORT to another base port, or point AzureWebJobsStorage at your storage";
  if (holder)
    return (
      `the embedded storage needs port ${port} (${kind}), which diskdelta's storage server pid ${holder.pid} ` +
      `of the data folder ${holder.home} holds; use that folder (DISKDELTA_HOME=${holder.home}), ` +
      `stop what uses it (the server exits a few seconds after its last command), or ${fixes}`
    );
  return `the embedded storage needs port ${port} (${kind}), which another program uses; stop it, ${fixes}`;
}
