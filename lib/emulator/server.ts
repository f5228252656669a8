/**
 * The storage server of one data folder: `node dist/lib/emulator/server.js <home> <blobPort>
 * <idleMs>`, started detached by the first diskdelta process that needs the embedded storage
 * (embedded.ts) and shared by every process of that folder. Guarantees: at most one server serves
 * a folder at a time (it serves only while it holds the folder's newest lock epoch, lock.ts, and
 * checks that every second); it listens on 127.0.0.1 only; it answers a client's hello only once
 * Azurite is up, or with the reason it could not start; it stays while any client's connection is
 * open and stops `idleMs` after the last one closed (or after starting, if none came), flushing
 * Azurite's data before it releases the lock, so the next server starts from complete files.
 * SIGINT/SIGTERM stop it the same way. Everything it writes is private (umask 077); it logs to
 * `<home>/server.log`, never a key.
 */
import fs from "node:fs";
import net from "node:net";
import crypto from "node:crypto";
import path from "node:path";
import { startAzurite, type RunningAzurite } from "./azurite";
import { folderPaths, loadOrCreateKeys, openDataFolder } from "./folder";
import {
  acquireLock,
  bootId,
  portClashMessage,
  portHolder,
  portsFrom,
  portStillBusy,
  register,
  releaseLock,
  stillHeld,
  unregister,
  type LockRecord,
  type Reply,
} from "./lock";

const LOG_LIMIT = 1024 * 1024;

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} server pid ${process.pid}: ${message}\n`);
}

function oneLine(err: unknown): string {
  return String((err as Error)?.message ?? err)
    .replace(/\s+/g, " ")
    .trim();
}

type State = "starting" | "ready" | "closing" | "failed";

async function serve(homeArg: string, blobPort: number, idleMs: number): Promise<void> {
  process.umask(0o077);
  const home = openDataFolder(homeArg);
  const paths = folderPaths(home);
  const ports = portsFrom(blobPort);
  const token = crypto.randomBytes(24).toString("hex");
  let state: State = "starting";
  let failure = "";
  // Set once the lock is won; until then every request is refused (no token to check against).
  let record: LockRecord | undefined = undefined;
  const clients = new Set<net.Socket>();
  const waiting = new Set<net.Socket>();
  let idle: NodeJS.Timeout | undefined;

  const send = (socket: net.Socket, reply: Reply, end = false) => {
    if (socket.destroyed) return;
    socket.write(`${JSON.stringify(reply)}\n`);
    if (end) socket.end();
  };
  const ok = () => ({ ok: true, pid: process.pid, home, epoch: record?.epoch, ...ports });

  const armIdle = () => {
    if (idle || state !== "ready" || clients.size > 0) return;
    idle = setTimeout(() => {
      idle = undefined;
      if (state === "ready" && clients.size === 0) void stop(`no client for ${idleMs} ms`);
    }, idleMs);
  };

  const control = net.createServer((socket) => {
    socket.setEncoding("utf8");
    socket.on("error", () => undefined);
    // A connection that says nothing is not a client.
    const silent = setTimeout(() => socket.destroy(), 5000);
    let buffer = "";
    const onData = (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf("\n");
      if (end < 0) {
        if (buffer.length > 4096) socket.destroy();
        return;
      }
      clearTimeout(silent);
      socket.off("data", onData);
      let request: Reply;
      try {
        request = JSON.parse(buffer.slice(0, end)) as Reply;
      } catch {
        socket.destroy();
        return;
      }
      if (!record || request.token !== record.token) {
        socket.destroy();
        return;
      }
      if (request.op === "who") {
        send(socket, { pid: process.pid, home, state, ...ports }, true);
      } else if (request.op === "hello") {
        if (state === "closing") return send(socket, { closing: true }, true);
        if (state === "failed") return send(socket, { error: failure }, true);
        clients.add(socket);
        if (idle) clearTimeout(idle);
        idle = undefined;
        if (state === "ready") send(socket, ok());
        else waiting.add(socket);
      } else {
        socket.destroy();
      }
    };
    socket.on("data", onData);
    socket.on("close", () => {
      clearTimeout(silent);
      clients.delete(socket);
      waiting.delete(socket);
      armIdle();
    });
  });
  // Open before the lock is taken and until after it is released: a refused connection to the
  // control port of a held lock means its holder is gone (lock.ts).
  await new Promise<void>((resolve, reject) => {
    control.once("error", reject);
    control.listen(0, "127.0.0.1", () => resolve());
  });
  const controlPort = (control.address() as net.AddressInfo).port;

  const acquired = await acquireLock(home, {
    pid: process.pid,
    home,
    controlPort,
    token,
    bootId: bootId(),
    startedAt: new Date().toISOString(),
    state: "held",
    ...ports,
  });
  if (!acquired.won) {
    // Another server was started at the same moment and serves; its clients find it by the lock.
    control.close();
    return;
  }
  record = acquired.record;
  const held = record;
  const previous = acquired.previous;
  try {
    if (fs.statSync(paths.log).size > LOG_LIMIT) fs.truncateSync(paths.log, 0);
  } catch {
    // No log (started by hand with another stdout).
  }
  log(`epoch ${held.epoch} of ${home}: starting on ports ${ports.blobPort}-${ports.tablePort}`);
  register(held);

  let azurite: RunningAzurite | undefined;
  const check = setInterval(() => {
    if (stillHeld(home, held)) return;
    // The folder was deleted or its lock rewritten under us: write nothing more to it.
    log(`epoch ${held.epoch} is no longer the lock of ${home}; exiting without flushing`);
    unregister(held);
    process.exit(1);
  }, 1000);

  const fail = (message: string) => {
    state = "failed";
    failure = message;
    log(`cannot serve: ${message}`);
    for (const socket of waiting) send(socket, { error: message }, true);
    releaseLock(home, held, "failed", message);
    unregister(held);
    clearInterval(check);
    control.close();
    process.exitCode = 1;
    // Let the replies leave before the process ends.
    setTimeout(() => process.exit(1), 200);
  };

  const stop = async (why: string) => {
    if (state === "closing") return;
    state = "closing";
    log(`stopping: ${why}`);
    clearInterval(check);
    for (const socket of clients) socket.destroy();
    try {
      // Flushes Azurite's metadata: the next server must find complete files.
      await azurite?.close();
    } catch (err) {
      log(`closing Azurite: ${oneLine(err)}`);
    }
    releaseLock(home, held, "released");
    unregister(held);
    log(`epoch ${held.epoch} released`);
    control.close();
    process.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => void stop(signal));
  process.on("SIGHUP", () => undefined);
  process.on("uncaughtException", (err) => {
    log(`uncaught: ${oneLine(err)}`);
    releaseLock(home, held, "failed", oneLine(err));
    unregister(held);
    process.exit(1);
  });

  try {
    const busy = await portStillBusy(ports, previous);
    if (busy) return fail(portClashMessage(busy[0], busy[1], await portHolder(busy[1])));
    try {
      require.resolve("azurite/dist/src/blob/BlobServer");
    } catch {
      return fail(
        "the embedded storage needs the development install (azurite is not installed: run npm ci), or point AzureWebJobsStorage at your storage",
      );
    }
    // The whole tree, once per start: data left by an older diskdelta may be readable by anyone.
    openDataFolder(home, true);
    const keys = loadOrCreateKeys(home);
    // The file by which diskdelta 0.1 shared an in-process Azurite; nothing reads it any more.
    fs.rmSync(path.join(home, "serving.json"), { force: true });
    azurite = await startAzurite({ accounts: keys, location: paths.azurite, ...ports });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { port?: number };
    if (e.code === "EADDRINUSE" && e.port) {
      const kind = e.port === ports.blobPort ? "blob" : e.port === ports.queuePort ? "queue" : "table";
      return fail(portClashMessage(kind, e.port, await portHolder(e.port)));
    }
    return fail(`Azurite did not start: ${oneLine(err)} (data in ${paths.azurite})`);
  }
  state = "ready";
  log(`epoch ${held.epoch}: serving`);
  for (const socket of waiting) send(socket, ok());
  waiting.clear();
  armIdle();
}

const [home, port, idle] = process.argv.slice(2);
if (!home || !/^\d+$/.test(port ?? "") || !/^\d+$/.test(idle ?? "")) {
  process.stderr.write("usage: server.js <dataFolder> <blobPort> <idleMs>\n");
  process.exitCode = 2;
} else {
  serve(home, Number(port), Number(idle)).catch((err) => {
    log(`failed: ${oneLine(err)}`);
    process.exit(1);
  });
}
