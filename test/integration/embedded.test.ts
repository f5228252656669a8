/**
 * The embedded storage shared by many processes (lib/emulator/embedded.ts, server.ts, lock.ts), with
 * real processes against the compiled code: test/support/embeddedClient.ts (attach, write and read
 * a blob and a table row, exit) and the CLI. Proves: processes started at random moments on one
 * data folder all finish, with their data kept, through one server at a time that leaves once
 * the last client is gone; stale locks (dead pid, pid of another program, refused control port)
 * are taken over; a taken port fails a command within seconds with one line naming the holder when
 * it is diskdelta's own server; a server killed under a client is replaced; the folder is private.
 *
 * Linux-specific evidence (/proc): which server processes exist, and which ports listen. Every
 * process started here is a child of this test or a server it caused; afterAll stops what is left.
 */
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { TableClient } from "@azure/data-tables";
import { BlobServiceClient } from "@azure/storage-blob";
import { DEFAULT_IDLE_MS, startEmbedded } from "../../lib/emulator/embedded";
import { bootId, type LockRecord } from "../../lib/emulator/lock";
import { ensureBuilt, MAIN, ROOT } from "../support/build";
import { CONTAINER, TABLE } from "../support/embeddedClient";

const CLIENT = path.join(ROOT, "dist/test/support/embeddedClient.js");
/** The tests' servers idle out after 1 s instead of DEFAULT_IDLE_MS, so rounds meet stopping servers. */
const IDLE_MS = 1000;
/** Any process still running after this is hung: killed and reported. */
const HANG_MS = 45_000;

let scratch: string;
const homes: string[] = [];

beforeAll(() => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-embedded-"));
});

afterAll(async () => {
  for (const home of homes) for (const pid of serverProcesses(home)) process.kill(pid, "SIGTERM");
  fs.rmSync(scratch, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function newHome(): string {
  const home = path.join(fs.mkdtempSync(path.join(scratch, "h-")), "home");
  homes.push(home);
  return home;
}

interface Proc {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  hung: boolean;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, args, {
      cwd: scratch,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? scratch, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      child.kill("SIGKILL");
    }, HANG_MS);
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started, hung });
    });
  });
}

const client = (home: string, port: number, id: string) =>
  run([CLIENT, home, String(port), String(IDLE_MS), id]);
const cli = (home: string, port: number, args: string[]) =>
  run([MAIN, ...args], { DISKDELTA_HOME: home, DISKDELTA_EMBEDDED_PORT: String(port) });

/** A base port whose next two ports are free too (as in cli.test.ts), away from ports taken here. */
const taken = new Set<number>();
async function freePortBase(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + crypto.randomInt(40000);
    if ([0, 1, 2].some((i) => taken.has(base + i) || taken.has(base - i))) continue;
    if ((await free(base)) && (await free(base + 1)) && (await free(base + 2))) {
      [0, 1, 2].forEach((i) => taken.add(base + i));
      return base;
    }
  }
  throw new Error("found no three consecutive free ports");
}

/** Pids of the storage-server processes of a data folder (their command line names it). */
function serverProcesses(home: string): number[] {
  let real = home;
  try {
    real = fs.realpathSync(home);
  } catch {
    // Deleted: its path is still on the command line.
  }
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (args.some((a) => a.endsWith(path.join("emulator", "server.js"))) && args.includes(real))
        pids.push(Number(entry));
    } catch {
      // Exited meanwhile.
    }
  }
  return pids;
}

/** The 127.0.0.1 / 0.0.0.0 ports in LISTEN state, from /proc/net/tcp. */
function listeningPorts(): Set<number> {
  const ports = new Set<number>();
  for (const line of fs.readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[3] === "0A") ports.add(parseInt(fields[1].split(":")[1], 16));
  }
  return ports;
}

async function waitFor(what: string, condition: () => boolean, ms: number): Promise<number> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
  return Date.now() - started;
}

interface Served {
  pid: number;
  epoch: number;
  start: number;
  end?: number;
}

/** What the server log says: each winning server's epoch, from taking the lock to releasing it. */
function servedIntervals(home: string): Served[] {
  const served = new Map<number, Served>();
  for (const line of fs.readFileSync(path.join(home, "server.log"), "utf8").split("\n")) {
    const start = /^(\S+) server pid (\d+): epoch (\d+) of .*: starting/.exec(line);
    if (start)
      served.set(Number(start[2]), {
        pid: Number(start[2]),
        epoch: Number(start[3]),
        start: Date.parse(start[1]),
      });
    const end = /^(\S+) server pid (\d+): epoch (\d+) released/.exec(line);
    if (end) served.get(Number(end[2]))!.end = Date.parse(end[1]);
  }
  return [...served.values()].sort((a, b) => a.start - b.start);
}

function expectOneServerAtATime(served: Served[]): void {
  for (const [i, s] of served.entries()) {
    expect({ pid: s.pid, released: s.end !== undefined }).toEqual({ pid: s.pid, released: true });
    if (i > 0) {
      expect(s.epoch).toBeGreaterThan(served[i - 1].epoch);
      expect(s.start).toBeGreaterThanOrEqual(served[i - 1].end!);
    }
  }
}

/** Whether a process exists and has not exited (an exited child not yet reaped is a zombie: dead). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
  } catch {
    return false;
  }
}

function expectNoKeyIn(home: string, outputs: string[]): void {
  const keys = Object.values(JSON.parse(fs.readFileSync(path.join(home, "accounts.json"), "utf8")) as object);
  for (const out of outputs)
    for (const key of keys) if (out.includes(key)) throw new Error("a key was printed");
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Rounds of the race below; test/integration/concurrentCommands.test.ts runs the 20 rounds of real CLI commands. */
const ROUNDS = 8;

test(`${ROUNDS} rounds of 6 processes started at random moments within 1 s on one data folder`, async () => {
  const home = newHome();
  // Clients of one folder with two different base ports: two servers at once would show as both
  // blob ports listening, and would split or lose the data.
  const bases = [await freePortBase(), await freePortBase()];
  let bothListening = 0;
  let samples = 0;
  const sampler = setInterval(() => {
    const listening = listeningPorts();
    samples++;
    if (bases.every((b) => listening.has(b))) bothListening++;
  }, 20);
  const ids: string[] = [];
  const outputs: string[] = [];
  const attach: number[] = [];
  const total: number[] = [];
  const rounds: number[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const started = Date.now();
      const results = await Promise.all(
        Array.from({ length: 6 }, async (_, i) => {
          await sleep(crypto.randomInt(1000));
          const id = `r${round}c${i}`;
          ids.push(id);
          return { id, result: await client(home, bases[i % 2], id) };
        }),
      );
      rounds.push(Date.now() - started);
      for (const { id, result } of results) {
        outputs.push(result.stdout, result.stderr);
        expect({ id, code: result.code, hung: result.hung, stderr: result.stderr }).toEqual({
          id,
          code: 0,
          hung: false,
          stderr: "",
        });
        const out = JSON.parse(result.stdout) as { attachMs: number; totalMs: number };
        attach.push(out.attachMs);
        total.push(out.totalMs);
      }
      // The next round: at once (the server is warm), about when the server stops (new clients
      // meet a stopping server), or after it has gone (a cold start that takes over the lock).
      const pause = [0, IDLE_MS + crypto.randomInt(300), crypto.randomInt(IDLE_MS), IDLE_MS + 1500][
        round % 4
      ];
      if (round < ROUNDS - 1) await sleep(pause);
    }
  } finally {
    clearInterval(sampler);
  }
  expect({ samples: samples > 100, bothListening }).toEqual({ samples: true, bothListening: 0 });

  // No server is left once the idle period has passed.
  const leftFor = await waitFor(
    "the last server to leave",
    () => serverProcesses(home).length === 0,
    IDLE_MS + 5000,
  );
  const served = servedIntervals(home);
  // Every fourth pause is longer than the idle period: a server stopped and a new one took over
  // (the shorter pauses may or may not see one).
  expect(served.length).toBeGreaterThanOrEqual(1 + Math.floor((ROUNDS - 1) / 4));
  expectOneServerAtATime(served);
  await waitFor("every server to have exited", () => served.every((s) => !alive(s.pid)), 5000);

  // Every process's blob and row is there, through a new server (this test process as the client).
  const storage = await startEmbedded(home, bases[0], { idleMs: IDLE_MS });
  try {
    const container = BlobServiceClient.fromConnectionString(storage.connectionString).getContainerClient(
      CONTAINER,
    );
    const table = TableClient.fromConnectionString(storage.connectionString, TABLE, {
      allowInsecureConnection: true,
    });
    for (const id of ids) {
      const blob = (await container.getBlockBlobClient(id).downloadToBuffer()).toString();
      expect(blob).toMatch(new RegExp(`^written by ${id} through pid \\d+$`));
      expect((await table.getEntity<{ body: string }>("p", id)).body).toBe(blob);
    }
  } finally {
    await storage.close();
  }
  await waitFor("the checking server to leave", () => serverProcesses(home).length === 0, IDLE_MS + 5000);
  expectNoKeyIn(home, outputs);
  console.log(
    `embedded rounds: ${ids.length} processes in ${ROUNDS} rounds, ${served.length} servers one after another; ` +
      `attach median ${median(attach)} ms, max ${Math.max(...attach)} ms; process median ${median(total)} ms, ` +
      `max ${Math.max(...total)} ms; round max ${Math.max(...rounds)} ms; last server gone ${leftFor} ms after the last client`,
  );
}, 600_000);

test("CLI commands at random moments share one server, which leaves DEFAULT_IDLE_MS after the last", async () => {
  const home = newHome();
  const port = await freePortBase();
  const results = await Promise.all(
    Array.from({ length: 4 }, async () => {
      await sleep(crypto.randomInt(1000));
      return cli(home, port, ["disk", "list", "--json"]);
    }),
  );
  const ended = Date.now();
  for (const r of results) expect([r.code, r.hung, r.stderr, r.stdout.trim()]).toEqual([0, false, "", "[]"]);
  const gone = await waitFor(
    "the server to leave",
    () => serverProcesses(home).length === 0,
    DEFAULT_IDLE_MS + 5000,
  );
  expect(Date.now() - ended).toBeGreaterThanOrEqual(DEFAULT_IDLE_MS - 500);
  const served = servedIntervals(home);
  expect(served).toHaveLength(1);
  expectOneServerAtATime(served);
  console.log(`CLI: 4 commands, one server; gone ${gone} ms after the last command ended`);
}, 120_000);

function writeLock(home: string, pid: number, epoch: number, controlPort: number, port: number): void {
  const dir = path.join(home, "server");
  fs.mkdirSync(dir, { recursive: true });
  const record: LockRecord = {
    epoch,
    pid,
    home: fs.realpathSync(home),
    controlPort,
    token: crypto.randomBytes(24).toString("hex"),
    bootId: bootId(),
    startedAt: new Date().toISOString(),
    state: "held",
    blobPort: port,
    queuePort: port + 1,
    tablePort: port + 2,
  };
  fs.writeFileSync(path.join(dir, `lock.${epoch}.json`), JSON.stringify(record));
}

test("a stale lock is taken over: dead pid, pid of another program, a server whose control port refuses", async () => {
  const dead = await run(["-e", "process.stdout.write(String(process.pid))"]);
  const deadPid = Number(dead.stdout);
  expect(alive(deadPid)).toBe(false);
  // Alive, with "server.js" on its command line, but listening on no control port.
  const impostor = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", "server.js"], {
    stdio: "ignore",
  });
  try {
    const closedPort = await freePortBase();
    for (const [what, pid] of [
      ["dead pid", deadPid],
      ["another program", process.pid],
      ["refused control port", impostor.pid!],
    ] as const) {
      const home = newHome();
      const port = await freePortBase();
      fs.mkdirSync(home, { recursive: true });
      writeLock(home, pid, 7, closedPort, port);
      const result = await client(home, port, "after-stale");
      expect({ what, code: result.code, stderr: result.stderr, hung: result.hung }).toEqual({
        what,
        code: 0,
        stderr: "",
        hung: false,
      });
      expect(result.ms).toBeLessThan(15_000);
      const lock = JSON.parse(
        fs.readFileSync(path.join(home, "server", "lock.8.json"), "utf8"),
      ) as LockRecord;
      expect(lock.pid).not.toBe(pid);
      expect(fs.existsSync(path.join(home, "server", "lock.7.json"))).toBe(false);
      expect(alive(pid) || what === "dead pid").toBe(true); // nothing was killed to take over
    }
  } finally {
    impostor.kill();
  }
}, 120_000);

test("a port held by another program: one line naming the port, exit 1 within seconds, no server", async () => {
  const home = newHome();
  const port = await freePortBase();
  const other = net.createServer();
  await new Promise<void>((resolve) => other.listen(port + 1, "127.0.0.1", () => resolve()));
  try {
    const result = await cli(home, port, ["disk", "list"]);
    expect(result.code).toBe(1);
    expect(result.stderr.split("\n").filter(Boolean)).toEqual([
      `diskdelta: the embedded storage needs port ${port + 1} (queue), which another program uses; stop it, set DISKDELTA_EMBEDDED_PORT to another base port, or point AzureWebJobsStorage at your storage`,
    ]);
    expect(result.ms).toBeLessThan(5000);
    expect(serverProcesses(home)).toEqual([]);

    // The same clash met by the server itself (a program took the port after the client looked).
    const server = await run([path.join(ROOT, "dist/lib/emulator/server.js"), home, String(port), "1000"]);
    expect([server.code, server.hung]).toEqual([1, false]);
    expect(server.ms).toBeLessThan(5000);
    const lock = JSON.parse(fs.readFileSync(path.join(home, "server", "lock.1.json"), "utf8")) as LockRecord;
    expect(lock.state).toBe("failed");
    expect(lock.error).toMatch(new RegExp(`needs port ${port + 1} \\(queue\\), which another program uses`));
  } finally {
    other.close();
  }
}, 60_000);

test("a port held by diskdelta's server of another data folder: named with its pid and folder", async () => {
  const homeA = newHome();
  const homeB = newHome();
  const port = await freePortBase();
  const a = await startEmbedded(homeA, port, { idleMs: IDLE_MS });
  try {
    const result = await cli(homeB, port, ["disk", "list"]);
    expect(result.code).toBe(1);
    const lines = result.stderr.split("\n").filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(
      `needs port ${port} (blob), which diskdelta's storage server pid ${a.server.pid} of the data folder ${fs.realpathSync(homeA)} holds`,
    );
    expect(result.ms).toBeLessThan(5000);
    expect(serverProcesses(homeB)).toEqual([]);
  } finally {
    await a.close();
  }
}, 60_000);

test("a server killed under a client: the client's next storage calls reach a new one", async () => {
  const home = newHome();
  const port = await freePortBase();
  const storage = await startEmbedded(home, port, { idleMs: IDLE_MS });
  try {
    const first = storage.server.pid;
    process.kill(first, "SIGKILL");
    const took = await waitFor("a new server", () => storage.server.pid !== first, 15_000);
    expect(serverProcesses(home)).toEqual([storage.server.pid]);
    const container = BlobServiceClient.fromConnectionString(storage.connectionString).getContainerClient(
      "after",
    );
    await container.createIfNotExists();
    expect((await container.getProperties()).etag).toEqual(expect.any(String));
    console.log(`killed server replaced in ${took} ms`);
  } finally {
    await storage.close();
  }
  await waitFor("the server to leave", () => serverProcesses(home).length === 0, IDLE_MS + 5000);
}, 60_000);

test("a data folder made 0777 with files anyone may read becomes 0700 with 0600 files, on every open", async () => {
  const home = newHome();
  const port = await freePortBase();
  const data = path.join(home, "azurite", "__blobstorage__");
  fs.mkdirSync(data, { recursive: true });
  for (const dir of [home, path.join(home, "azurite"), data]) fs.chmodSync(dir, 0o777);
  fs.writeFileSync(path.join(home, "notes.txt"), "x", { mode: 0o666 });
  fs.writeFileSync(path.join(data, "old-extent"), "x", { mode: 0o666 });
  fs.chmodSync(path.join(data, "old-extent"), 0o666);
  // A link out of the folder is not followed.
  const outside = path.join(path.dirname(home), "outside.txt");
  fs.writeFileSync(outside, "x");
  fs.chmodSync(outside, 0o644);
  fs.symlinkSync(outside, path.join(home, "link"));

  const modes = () => {
    const wrong: string[] = [];
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        const mode = fs.lstatSync(full).mode & 0o777;
        if (entry.isDirectory()) {
          if (mode !== 0o700) wrong.push(`${full} ${mode.toString(8)}`);
          walk(full);
        } else if (entry.isFile() && mode !== 0o600) wrong.push(`${full} ${mode.toString(8)}`);
      }
    };
    if ((fs.statSync(home).mode & 0o777) !== 0o700) wrong.push(home);
    walk(home);
    return wrong;
  };

  const first = await client(home, port, "modes");
  expect([first.code, first.stderr]).toEqual([0, ""]);
  // Including everything Azurite wrote while serving (the server's umask).
  await waitFor("the server to leave", () => serverProcesses(home).length === 0, IDLE_MS + 5000);
  expect(modes()).toEqual([]);
  expect(fs.statSync(outside).mode & 0o777).toBe(0o644);

  // Loosened again while no server runs: the next command's open tightens it again.
  fs.chmodSync(home, 0o777);
  fs.chmodSync(path.join(home, "accounts.json"), 0o644);
  const second = await cli(home, port, ["disk", "list"]);
  expect(second.code).toBe(0);
  expect(fs.statSync(home).mode & 0o777).toBe(0o700);
  expect(fs.statSync(path.join(home, "accounts.json")).mode & 0o777).toBe(0o600);
  await waitFor("the server to leave", () => serverProcesses(home).length === 0, DEFAULT_IDLE_MS + 5000);
  expect(modes()).toEqual([]);
}, 60_000);
