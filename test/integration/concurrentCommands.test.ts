/**
 * Any number of diskdelta commands on one data folder at once (issue 12 item 1, its "Done when"):
 * 20 rounds of 6 real CLI processes (`node dist/lib/cli/main.js`) started at random moments within
 * one second on the embedded storage of one DISKDELTA_HOME, with no `npm start` and no storage the
 * test keeps open during a round: backups of three disks, a restore of one of them to a file,
 * `points` and `disk list`. Every command exits 0, none hangs, every restored file equals the disk
 * as it was when that restore point was taken, and when the last command is done no process is
 * left: the storage server leaves by itself after its idle period.
 *
 * Between rounds the test changes each disk (so every backup seals a point) through the same
 * embedded storage, and sometimes waits until the server has gone, so a round also starts cold:
 * six commands racing to start one server. Linux evidence from /proc (which processes exist).
 */
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { DEFAULT_IDLE_MS, startEmbedded } from "../../lib/emulator/embedded";
import { ensureBuilt, MAIN } from "../support/build";

const ROUNDS = 20;
const DISK_SIZE = 2 * 1024 * 1024;
const DISKS = ["vm1-os", "vm1-data0", "vm2-os"];
/** A command still running after this is hung: killed and reported. */
const HANG_MS = 90_000;
/** A round that first waits for the server to leave, so six commands race to start the next one (round 0 is cold too). */
const COLD_ROUNDS = new Set([10]);

let scratch: string;
let home: string;
let port: number;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Proc {
  args: string[];
  pid?: number;
  code: number | null;
  stdout: string;
  stderr: string;
  hung: boolean;
}

const pids: number[] = [];

function cli(args: string[]): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      cwd: scratch,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: scratch,
        DISKDELTA_HOME: home,
        DISKDELTA_EMBEDDED_PORT: String(port),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    if (child.pid) pids.push(child.pid);
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
      resolve({ args, pid: child.pid, code, stdout, stderr, hung });
    });
  });
}

function ok<T>(p: Proc): T {
  if (p.code !== 0 || p.hung)
    throw new Error(`diskdelta ${p.args.join(" ")}: exit ${p.code}${p.hung ? " (hung)" : ""}\n${p.stderr}`);
  return JSON.parse(p.stdout) as T;
}

async function freePortBase(): Promise<number> {
  const free = (p: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(p, "127.0.0.1", () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + crypto.randomInt(40000);
    if ((await free(base)) && (await free(base + 1)) && (await free(base + 2))) return base;
  }
  throw new Error("found no three consecutive free ports");
}

/** Processes whose command line or environment names the data folder (the server, any command). */
function processesOf(folder: string): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.split(") ")[1]?.[0] === "Z") continue; // exited, not yet reaped
      let environ = "";
      try {
        environ = fs.readFileSync(`/proc/${entry}/environ`, "utf8");
      } catch {
        // Another user's process: not ours.
      }
      if (cmd.includes(folder) || environ.split("\0").includes(`DISKDELTA_HOME=${folder}`))
        found.push(`${entry}: ${cmd.join(" ")}`);
    } catch {
      // Exited meanwhile.
    }
  }
  return found;
}

/** Writes a few random pieces and sometimes clears one, through the embedded storage; returns the new image. */
async function change(client: ReturnType<BlobServiceClient["getContainerClient"]>, blob: string) {
  const page = client.getPageBlobClient(blob);
  for (let i = 0; i < 3; i++) {
    const length = 512 * crypto.randomInt(1, 256);
    const start = 512 * crypto.randomInt(0, (DISK_SIZE - length) / 512);
    await page.uploadPages(crypto.randomBytes(length), start, length);
  }
  if (crypto.randomInt(3) === 0) {
    const length = 512 * crypto.randomInt(1, 128);
    await page.clearPages(512 * crypto.randomInt(0, (DISK_SIZE - length) / 512), length);
  }
  return page.downloadToBuffer(0, DISK_SIZE);
}

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-concurrent-"));
  home = path.join(scratch, "home");
  port = await freePortBase();
});

afterAll(() => {
  // Nothing should be left (the test asserts it); stop whatever a failure left behind.
  for (const line of processesOf(home)) {
    try {
      process.kill(Number(line.split(":")[0]), "SIGKILL");
    } catch {
      // Gone.
    }
  }
  fs.rmSync(scratch, { recursive: true, force: true });
});

test(`${ROUNDS} rounds of 6 commands at random moments within 1 s on one data folder: all exit 0, restores equal their source, nothing left running`, async () => {
  // The disks, written through the embedded storage the commands use (the walkthrough's account).
  const open = async () => {
    const storage = await startEmbedded(home, port);
    const account = "mypremiumaccount";
    const service = new BlobServiceClient(
      storage.blobUrl(account),
      new StorageSharedKeyCredential(account, storage.keys.get(account)!),
    );
    return { storage, vhds: service.getContainerClient("vhds") };
  };
  const setup = await open();
  await setup.vhds.createIfNotExists();
  for (const id of DISKS) {
    const page = setup.vhds.getPageBlobClient(`${id}.vhd`);
    await page.create(DISK_SIZE);
    await page.uploadPages(crypto.randomBytes(256 * 1024), 0, 256 * 1024);
  }
  const backupAccount = setup.storage.blobUrl("mybackupstdaccount");
  const sourceOf = (id: string) => `${setup.storage.blobUrl("mypremiumaccount")}/vhds/${id}.vhd`;
  await setup.storage.close();

  for (const id of DISKS)
    ok(await cli(["disk", "add", id, "--source", sourceOf(id), "--backup-account", backupAccount, "--json"]));

  /** The image each point was taken from: what a restore of it must give back. */
  const imageOf = new Map<string, Buffer>();
  /** The newest point of each disk after the last round. */
  const newest = new Map<string, string>();
  const slowest: number[] = [];
  let restored = 0;

  for (let round = 0; round < ROUNDS; round++) {
    if (COLD_ROUNDS.has(round)) await sleep(DEFAULT_IDLE_MS + 2000);
    const { storage, vhds } = await open();
    const images = new Map<string, Buffer>();
    for (const id of DISKS) images.set(id, await change(vhds, `${id}.vhd`));
    await storage.close(); // during the round, only the commands use the storage

    const before = new Map(newest);
    const restoreOf = DISKS[round % DISKS.length];
    const file = path.join(scratch, `restore-${round}.img`);
    const commands: string[][] = [
      ...DISKS.map((id) => ["backup", id, "--json"]),
      round === 0
        ? ["points", restoreOf, "--json"] // nothing sealed by the rounds yet: a second reader instead
        : ["restore", restoreOf, "--point", newest.get(restoreOf)!, "--to-file", file, "--json"],
      ["points", DISKS[(round + 1) % DISKS.length], "--json"],
      ["disk", "list", "--json"],
    ];
    const started = Date.now();
    const results = await Promise.all(
      commands.map(async (args) => {
        await sleep(crypto.randomInt(1000));
        return cli(args);
      }),
    );
    slowest.push(Date.now() - started);
    for (const r of results) {
      // Nothing on stderr but the status lines of work that lasted over 5 s (stderr is a pipe here).
      const said = r.stderr.split("\n").filter((l) => l !== "" && !l.startsWith("status: "));
      expect({ round, args: r.args.join(" "), code: r.code, hung: r.hung, said }).toEqual({
        round,
        args: r.args.join(" "),
        code: 0,
        hung: false,
        said: [],
      });
    }

    for (const [i, id] of DISKS.entries()) {
      const run = ok<{ state: string; restorePoint?: string }>(results[i]);
      expect([id, run.state]).toEqual([id, "succeeded"]);
      imageOf.set(run.restorePoint!, images.get(id)!);
      newest.set(id, run.restorePoint!);
    }
    if (round > 0) {
      const r = ok<{ pointId: string; path: string; size: number }>(results[3]);
      const expected = imageOf.get(r.pointId);
      expect(expected).toBeDefined();
      expect(r.size).toBe(DISK_SIZE);
      const bytes = fs.readFileSync(file);
      expect([r.pointId, bytes.equals(expected!)]).toEqual([r.pointId, true]);
      fs.rmSync(file);
      restored++;
    }
    // Points sealed by earlier rounds are there (this round's backups may or may not be yet).
    const points = ok<Array<{ id: string }>>(results[4]);
    if (round > 0) expect(points.map((p) => p.id)).toContain(before.get(DISKS[(round + 1) % DISKS.length]));
    const disks = ok<Array<{ id: string }>>(results[5]);
    expect(disks.map((d) => d.id).sort()).toEqual([...DISKS].sort());
  }
  expect(restored).toBe(ROUNDS - 1);

  // Every command has exited; the server leaves DEFAULT_IDLE_MS after the last one.
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  const deadline = Date.now() + DEFAULT_IDLE_MS + 15_000;
  while (processesOf(home).length > 0 && Date.now() < deadline) await sleep(200);
  expect(processesOf(home)).toEqual([]);
  console.log(
    `${ROUNDS} rounds × 6 commands: every exit 0, ${restored} restores equal their source; ` +
      `round wall times median ${[...slowest].sort((a, b) => a - b)[Math.floor(slowest.length / 2)]} ms, ` +
      `slowest ${Math.max(...slowest)} ms`,
  );
}, 900_000);
