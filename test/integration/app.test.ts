/**
 * The app end to end, as real processes on Azurite: the local host (`npm start`'s
 * dist/lib/host/main.js) serving HTTP, timer and queues, plus two `diskdelta worker` processes.
 * Proves: an HTTP backup request goes through the backup-requests queue, fans out as chunk
 * batches that at least two processes copy, and seals one restore point byte-identical to its
 * source snapshot, with the run's numbers in the run history; and a worker SIGKILLed in the middle
 * of a chunk batch does not stop the run: its message comes back after the lease and the run
 * seals, byte-identical again.
 *
 * The app's queue names are fixed, so this suite runs on an account of its own (appacct).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ensureBuilt, HOST } from "../support/build";
import { runScript } from "../support/processes";
import {
  backupAccountUrl,
  createDisk,
  expectSameImage,
  MiB,
  readImage,
  serviceClient,
  writeRandom,
  type TestDisk,
} from "../support/disks";
import { BACKUP_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";
import { startDiffProxy, type DiffProxy } from "../fixtures/diffProxy";
import type { runJson } from "../../lib/app/views";

type RunView = ReturnType<typeof runJson>;
type Json = Record<string, unknown> & { runs?: RunView[]; points?: { id: string }[] };

/** 8 MiB per batch message, one chunk at a time: many batches to share, each long enough to be caught mid-copy. */
const BATCH_CHUNKS = 2;
const CHANGED = 192 * MiB;

interface Proc {
  name: string;
  child: ChildProcess;
  out: string;
  exited: Promise<number | null>;
}

let home: string;
let env: NodeJS.ProcessEnv;
let cli: string;
let base: string;
const procs: Proc[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

function start(name: string, args: string[]): Proc {
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const proc: Proc = {
    name,
    child,
    out: "",
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))),
  };
  child.stdout?.on("data", (d) => (proc.out += d));
  child.stderr?.on("data", (d) => (proc.out += d));
  procs.push(proc);
  return proc;
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  ms = 90_000,
): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until)
      throw new Error(
        `timed out waiting for ${what}\n${procs.map((p) => `--- ${p.name}\n${p.out.slice(-3000)}`).join("\n")}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function api(
  method: string,
  route: string,
): Promise<{ status: number; body: Json; location?: string }> {
  const res = await fetch(`${base}/${route}`, { method });
  const text = await res.text();
  return {
    status: res.status,
    body: (text ? JSON.parse(text) : {}) as Json,
    location: res.headers.get("location") ?? undefined,
  };
}

/** Executions of a queue trigger a process has started and finished, from its --verbose log. */
function invocations(p: Proc, fn: "chunks" | "backupRequests"): { started: number; finished: number } {
  return {
    started: p.out.match(new RegExp(`Executing '${fn}'`, "g"))?.length ?? 0,
    finished: p.out.match(new RegExp(`Executed '${fn}'`, "g"))?.length ?? 0,
  };
}

/** True while a process is in the middle of an invocation of `fn`. */
function busyWith(p: Proc, fn: "chunks" | "backupRequests"): boolean {
  const c = invocations(p, fn);
  return c.started > c.finished;
}

/** Starts a backup through the API and returns the run's Location. */
async function requestBackup(diskId: string): Promise<string> {
  const res = await api("POST", `disks/${diskId}/backups`);
  expect(res.status).toBe(202);
  expect(res.location).toMatch(new RegExp(`/api/disks/${diskId}/runs/r-`));
  return res.location!;
}

async function finished(location: string): Promise<RunView> {
  return waitFor(
    `run ${location} to finish`,
    async () => {
      const res = await fetch(new URL(location, base));
      const run = (await res.json()) as RunView;
      return ["succeeded", "failed"].includes(run.state) ? run : undefined;
    },
    180_000,
  );
}

async function expectPointEqualsSource(disk: TestDisk, run: RunView): Promise<void> {
  const points = await api("GET", `disks/${run.diskId}/points`);
  const point = points.body.points?.find((p) => p.id === run.restorePoint);
  expect(point).toBeDefined();
  const backup = serviceClient(BACKUP_ACCOUNT)
    .getContainerClient("diskdelta")
    .getPageBlobClient(run.diskId)
    .withSnapshot(run.backupSnapshot ?? "");
  expectSameImage(
    await readImage(backup),
    await readImage(disk.client.withSnapshot(run.sourceSnapshot ?? "")),
    `restore point ${run.restorePoint}`,
  );
}

let disk: TestDisk;
let proxy: DiffProxy;
const diskId = uniqueName("app");

beforeAll(async () => {
  cli = ensureBuilt();
  home = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-app-"));
  const s = testStorage();
  const port = await freePort();
  base = `http://localhost:${port}/api`;
  env = {
    ...process.env,
    AzureWebJobsStorage: s.appStorage,
    STORAGE_ACCOUNT_KEYS: s.storageAccountKeys,
    DISKDELTA_TABLE_PREFIX: uniqueName("t"),
    DISKDELTA_HOME: home,
    DISKDELTA_HTTP_PORT: String(port),
    // No timer tick during the test: backups here come from HTTP only.
    DISKDELTA_SCHEDULE: "0 0 0 1 1 *",
    DISKDELTA_FANOUT_BYTES: String(4 * MiB),
    DISKDELTA_BATCH_CHUNKS: String(BATCH_CHUNKS),
    DISKDELTA_COPY_CONCURRENCY: "1",
    DISKDELTA_RETRY_BASE_MS: "20",
  };
  // Through the diff fixture, which answers page-range diffs as Azure does: the incremental run
  // is a service diff and fans out to the workers (on plain Azurite it would be a compare, which
  // the planner applies inline as it reads).
  proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  disk = await createDisk(512 * MiB, proxy.url);
  await writeRandom(disk.client, 0, CHANGED);
  const added = await runScript(
    cli,
    ["disk", "add", diskId, "--source", disk.url, "--backup-account", backupAccountUrl(proxy.url), "--json"],
    env,
  );
  expect(added.stderr).toBe("");
  expect(added.code).toBe(0);

  // A short message lease everywhere, so a killed worker's message comes back within seconds.
  const host = start("host", [HOST, "--verbose", "--lease-seconds", "3"]);
  await waitFor("the host to serve HTTP", () => (/HTTP API on/.test(host.out) ? true : undefined), 60_000);
  for (const name of ["worker1", "worker2"]) {
    const w = start(name, [cli, "worker", "--verbose", "--lease-seconds", "3"]);
    await waitFor(`${name} to start`, () => (/serving/.test(w.out) ? true : undefined), 60_000);
  }
}, 180_000);

afterAll(async () => {
  for (const p of procs)
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGTERM");
  await Promise.all(procs.map((p) => p.exited));
  await proxy?.close();
  fs.rmSync(home, { recursive: true, force: true, maxRetries: 3 });
}, 60_000);

test("an HTTP backup fans out to the host and two workers and seals one byte-identical restore point", async () => {
  const location = await requestBackup(diskId);
  const run = await finished(location);
  expect(run).toMatchObject({ state: "succeeded", kind: "full", bytesCopied: CHANGED, bytesCleared: 0 });
  expect(run.restorePoint).toMatch(/^p-/);
  await expectPointEqualsSource(disk, run);

  // The work was shared: chunk batches ran in at least two processes.
  const copiers = procs.filter((p) => invocations(p, "chunks").finished > 0);
  expect(copiers.length).toBeGreaterThanOrEqual(2);

  // The run history shows it with its numbers.
  const runs = await api("GET", `disks/${diskId}/runs`);
  expect(runs.status).toBe(200);
  expect(runs.body.runs?.[0]).toMatchObject({
    id: run.id,
    state: "succeeded",
    bytesCopied: CHANGED,
    chunks: CHANGED / (4 * MiB),
  });
  const points = await api("GET", `disks/${diskId}/points`);
  expect(points.body.points?.map((p) => p.id)).toEqual([run.restorePoint]);
}, 240_000);

test("a worker killed in the middle of a chunk batch: its message comes back and the run still seals", async () => {
  // New data over the first 128 MiB and a clear, so the run is incremental with work to share.
  await writeRandom(disk.client, 0, 128 * MiB);
  await disk.client.clearPages(160 * MiB, 8 * MiB);
  const location = await requestBackup(diskId);

  const workers = procs.filter((p) => p.name.startsWith("worker"));
  const before = new Map(workers.map((w) => [w.name, invocations(w, "chunks").finished]));
  // The victim copies a batch and is not the planner. Killing the planner too is another
  // scenario (fanout.test.ts): its successor replans by compare from the last checkpoint, skips
  // what the dead planner's batches already wrote, and the run counts only its own plan, so the
  // numbers below would depend on timing.
  const victim = await waitFor(
    "a worker in the middle of a chunk batch that is not planning",
    () => workers.find((w) => busyWith(w, "chunks") && !busyWith(w, "backupRequests")),
    120_000,
  );
  victim.child.kill("SIGKILL");
  await victim.exited;
  expect(invocations(victim, "chunks").finished).toBeGreaterThanOrEqual(before.get(victim.name) ?? 0);

  const run = await finished(location);
  expect(run).toMatchObject({
    state: "succeeded",
    kind: "incremental",
    bytesCopied: 128 * MiB,
    bytesCleared: 8 * MiB,
  });
  await expectPointEqualsSource(disk, run);
  // Redelivered: some process ran a chunk batch a second time (dequeue count 2).
  const redelivered = procs.some((p) =>
    /Executing 'chunks' \(message [^,]+, dequeue count [2-9]/.test(p.out),
  );
  expect(redelivered).toBe(true);

  const points = await api("GET", `disks/${diskId}/points`);
  expect(points.body.points).toHaveLength(2);
}, 300_000);
