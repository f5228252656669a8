/**
 * Network faults and bit rot, through the fault proxy (test/fixtures/faultProxy.ts) in front of the
 * shared Azurite's blob and table endpoints, driving the engine in this process and the real CLI
 * as processes (issue 13):
 *
 * - a stalled body, a body cut by a clean close (FIN), a dropped connection, a stalled answer and
 *   a 503, injected at the k-th read for every k of a restore and of a backup, are retried: each
 *   run ends done and byte-identical;
 * - after the last retry a command exits 1 with a message naming the operation, the blob and the
 *   range, and a restore to a file leaves its sidecar;
 * - a command whose storage (blob and tables) stalls for ever exits by itself within the bound the
 *   README documents, and no command outlives its last message by more than the exit grace;
 * - bit rot in a sealed snapshot (a byte flipped with its Content-MD5 recomputed, as rot at rest
 *   reads back) stops a restore with exit 1 naming the window, removes what a restore as a new
 *   disk made, leaves a restore to a file marked incomplete, records the point failed, and the
 *   point is refused next time unless --allow-damaged;
 * - the storage cut at random moments of restores to a file, many times: every exit-0 run left a
 *   byte-identical image and no sidecar, every other run exited non-zero with a message and left
 *   nothing that looks done; reruns resume;
 * - a backup SIGKILLed mid-copy and resumed counts exactly what the same change counts without a
 *   kill; a restore SIGKILLed mid-copy leaves leftovers that its rerun takes over.
 *
 * Figures (runs, faults injected, outcomes) are printed as `FIGURES …` lines for the README.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { backupDisk } from "../../lib/backup/run";
import { openEngine, type Engine } from "../../lib/compose";
import { silentLogger } from "../../lib/core/logger";
import { IntegrityError } from "../../lib/core/errors";
import { addDisk } from "../../lib/disks/register";
import type { RestorePointRecord, RunRecord } from "../../lib/lineage";
import { restoreAsNewDisk } from "../../lib/restore/restore";
import { restoreToFile, PARTIAL_SUFFIX } from "../../lib/restore/toFile";
import { verifyPoint } from "../../lib/restore/verify";
import { startDiffProxy, type DiffProxy } from "../fixtures/diffProxy";
import {
  anyRequest,
  isPutPage,
  isRead,
  onBlob,
  startFaultProxy,
  type FaultKind,
  type FaultProxy,
  type FaultRule,
} from "../fixtures/faultProxy";
import { ensureBuilt, MAIN } from "../support/build";
import {
  backupAccountUrl,
  createDisk,
  expectSameImage,
  MiB,
  readImage,
  seeded,
  serviceClient,
  testEngine,
  testEngineEnv,
  writeRandom,
  type Image,
  type TestDisk,
} from "../support/disks";
import { expectNoKeys, knownKeys } from "../support/processes";
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

const SIZE = 24 * MiB;
/** The CLI's grace after its last message (lib/cli/main.ts EXIT_GRACE_MS), plus scheduling slack on a busy machine. */
const EXIT_GRACE_BOUND_MS = 1000 + 700;

let blobs: FaultProxy;
let tables: FaultProxy;
let engine: Engine;
let cliPath: string;
let dir: string;
const figures: string[] = [];

beforeAll(async () => {
  cliPath = ensureBuilt();
  const s = testStorage();
  blobs = await startFaultProxy(`http://127.0.0.1:${s.blobPort}`);
  tables = await startFaultProxy(`http://127.0.0.1:${s.tablePort}`);
  engine = await testEngine({
    env: {
      DISKDELTA_BODY_STALL_SECONDS: "1",
      DISKDELTA_REQUEST_TIMEOUT_SECONDS: "2",
      DISKDELTA_SEGMENT_BYTES: String(8 * MiB),
    },
  });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-faults-"));
});
afterAll(async () => {
  await engine.close();
  await blobs.close();
  await tables.close();
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(figures.join("\n"));
});
afterEach(() => {
  blobs.clearFaults();
  tables.clearFaults();
});

/** Data in windows 0, 2, 3 and 5 of six, holes between: several windows, listing segments and reads. */
async function makeDisk(seed: number): Promise<{ id: string; disk: TestDisk }> {
  const disk = await createDisk(SIZE, blobs.url);
  const id = uniqueName("f");
  await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl(blobs.url) });
  const rng = seeded(seed);
  await writeRandom(disk.client, 0, MiB, rng.bytes);
  await writeRandom(disk.client, 8 * MiB, 12 * MiB, rng.bytes);
  await writeRandom(disk.client, 12 * MiB + 4096, 12 * MiB + 16384, rng.bytes);
  await writeRandom(disk.client, 20 * MiB + 512, 22 * MiB, rng.bytes);
  const run = await backupDisk(engine, id, { trigger: "cli" });
  expect(run.state).toBe("succeeded");
  return { id, disk };
}

function backupBlob(id: string) {
  return serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(id);
}

async function pointImage(id: string, point: RestorePointRecord): Promise<Image> {
  return readImage(backupBlob(id).withSnapshot(point.backupSnapshot));
}

async function latestPoint(id: string): Promise<RestorePointRecord> {
  const [p] = await engine.lineage.listPoints(id, 1);
  return p;
}

function expectSameFile(file: string, image: Image, what: string): void {
  const bytes = fs.readFileSync(file);
  if (bytes.equals(image.bytes)) return;
  let at = 0;
  while (at < bytes.length && bytes[at] === image.bytes[at]) at++;
  throw new Error(`${what}: ${bytes.length} vs ${image.size} bytes, first difference at ${at}`);
}

/** How many requests `match` sees in `work`, counted by a rule that never faults. */
async function countRequests(proxy: FaultProxy, match: FaultRule["match"], work: () => Promise<unknown>) {
  const counter = proxy.inject({ kind: "drop", match, nth: Number.MAX_SAFE_INTEGER });
  await work();
  counter.remove();
  return counter.seen;
}

interface Proc {
  code: number | null;
  stdout: string;
  stderr: string;
  /** From spawn to exit. */
  ms: number;
  /** From the last byte of output to the exit. */
  afterLastOutputMs: number;
  hung: boolean;
}

/** The CLI with the engine's tables and keys, its lineage reached through the table proxy. */
function cliEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const t = testStorage();
  return {
    AzureWebJobsStorage: t.webJobsStorage.replace(
      /TableEndpoint=http:\/\/127\.0\.0\.1:\d+/,
      `TableEndpoint=${tables.url}`,
    ),
    STORAGE_ACCOUNT_KEYS: t.storageAccountKeys,
    DISKDELTA_TABLE_PREFIX: engine.config.tablePrefix,
    DISKDELTA_BODY_STALL_SECONDS: "1",
    DISKDELTA_REQUEST_TIMEOUT_SECONDS: "2",
    DISKDELTA_RETRY_BASE_MS: "50",
    ...extra,
  };
}

/** Runs the CLI; a process alive after `hangMs` is SIGKILLed and reported as hung. */
function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { hangMs?: number; started?: (child: ChildProcess) => void } = {},
): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [cliPath, ...args], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? dir, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let lastOutput = started;
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      child.kill("SIGKILL");
    }, options.hangMs ?? 90_000);
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      lastOutput = Date.now();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      lastOutput = Date.now();
    });
    child.on("error", reject);
    child.on("exit", (code) => {
      const exited = Date.now();
      clearTimeout(timer);
      // Output still in the pipes arrives after exit: wait for it before judging.
      child.on("close", () => {
        const result = {
          code,
          stdout,
          stderr,
          ms: exited - started,
          afterLastOutputMs: exited - lastOutput,
          hung,
        };
        try {
          expectNoKeys(result, knownKeys(), `diskdelta ${args.join(" ")}`);
          resolve(result);
        } catch (err) {
          reject(err);
        }
      });
    });
    options.started?.(child);
  });
}

/** A failed command: exit 1, its last stderr line is its one message, and it ended within the grace of saying so. */
function expectFailedWithMessage(r: Proc, message: RegExp): void {
  expect(r.hung).toBe(false);
  const last = r.stderr.trim().split("\n").pop() ?? "";
  expect({ code: r.code, last }).toEqual({ code: 1, last: expect.stringMatching(message) });
  expect(last).toMatch(/^diskdelta: /);
  expect(r.afterLastOutputMs).toBeLessThan(EXIT_GRACE_BOUND_MS);
}

describe("a fault at the k-th read, for every k, is retried: done and byte-identical", () => {
  let id: string;
  let point: RestorePointRecord;
  let image: Image;
  beforeAll(async () => {
    ({ id } = await makeDisk(1));
    point = await latestPoint(id);
    image = await pointImage(id, point);
  });

  const KINDS: Array<[FaultKind, Partial<FaultRule>]> = [
    ["stall-body", {}],
    ["fin-body", {}],
    ["drop", {}],
    ["stall-headers", {}],
    ["status", { status: 503 }],
    // A byte flipped on the wire: the range MD5 the service sent exposes it, and the read is retried.
    ["bitrot", { transit: true }],
  ];

  test("restore to a file (engine), every fault kind at every read", async () => {
    const file = path.join(dir, `k-${id}.img`);
    const reads = await countRequests(blobs, isRead, () =>
      restoreToFile(engine, id, { path: file, overwrite: true }),
    );
    expect(reads).toBeGreaterThanOrEqual(5);
    let runs = 0;
    for (const [kind, extra] of KINDS) {
      for (let k = 1; k <= reads; k++) {
        fs.rmSync(file, { force: true });
        const before = blobs.injected.length;
        blobs.inject({ kind, nth: k, ...extra });
        const r = await restoreToFile(engine, id, { path: file });
        blobs.clearFaults();
        expect(blobs.injected.length - before).toBe(1);
        expect(r.checkedBy).toBe("digests");
        expectSameFile(file, image, `${kind} at read ${k}`);
        expect(fs.existsSync(`${file}${PARTIAL_SUFFIX}`)).toBe(false);
        runs++;
      }
    }
    figures.push(
      `FIGURES restore-to-file k-sweep: ${KINDS.length} kinds x ${reads} reads = ${runs} runs, ${runs} faults, ${runs} byte-identical`,
    );
  }, 240_000);

  test("restore as a new disk (engine), a cut or stalled body at every read", async () => {
    const reads = await countRequests(blobs, isRead, async () => {
      const r = await restoreAsNewDisk(engine, id, { name: `${id}-count` });
      expect(r.checkedBy).toBe("digests");
    });
    let runs = 0;
    for (const kind of ["fin-body", "stall-body"] as const) {
      for (let k = 1; k <= reads; k++) {
        const name = `${id}-${kind === "fin-body" ? "f" : "s"}${k}`;
        blobs.inject({ kind, nth: k });
        const r = await restoreAsNewDisk(engine, id, { name });
        blobs.clearFaults();
        const restored = serviceClient(SOURCE_ACCOUNT)
          .getContainerClient(new URL(r.diskUrl).pathname.split("/")[2])
          .getPageBlobClient(`${name}.vhd`);
        expectSameImage(await readImage(restored), image, `${kind} at read ${k}`);
        runs++;
      }
    }
    figures.push(
      `FIGURES restore-as-disk k-sweep: 2 kinds x ${reads} reads = ${runs} runs, ${runs} faults, ${runs} byte-identical`,
    );
  }, 240_000);

  test("incremental backup (engine), a cut or stalled body at every read of the run", async () => {
    const { id: bid, disk } = await makeDisk(2);
    const rng = seeded(3);
    const change = async () => {
      await writeRandom(disk.client, 0, 512 * 1024, rng.bytes);
      await writeRandom(disk.client, 9 * MiB, 9 * MiB + 8192, rng.bytes);
      await disk.client.clearPages(20 * MiB + 512, 4096);
    };
    await change();
    const reads = await countRequests(blobs, isRead, () => backupDisk(engine, bid, { trigger: "cli" }));
    expect(reads).toBeGreaterThanOrEqual(3);
    let runs = 0;
    for (const kind of ["fin-body", "stall-body"] as const) {
      for (let k = 1; k <= reads; k++) {
        await change();
        blobs.inject({ kind, nth: k });
        const run = await backupDisk(engine, bid, { trigger: "cli" });
        const injected = blobs.injected.filter((f) => f.kind === kind).length;
        blobs.clearFaults();
        expect(run.state).toBe("succeeded");
        expect(injected).toBeGreaterThan(0);
        const p = (await engine.lineage.getPoint(bid, run.restorePoint!))!;
        expectSameImage(
          await pointImage(bid, p),
          await readImage(disk.client.withSnapshot(run.sourceSnapshot!)),
          `backup with ${kind} at read ${k}`,
        );
        runs++;
      }
    }
    figures.push(
      `FIGURES incremental-backup k-sweep: 2 kinds x ${reads} reads = ${runs} runs, all succeeded, byte-identical`,
    );
  }, 240_000);

  test("the real CLI: a stalled body and a FIN-cut body are retried like a 503 and the restore ends done", async () => {
    for (const [kind, k] of [
      ["stall-body", 3],
      ["fin-body", 2],
      ["drop", 4],
    ] as const) {
      const file = path.join(dir, `cli-${kind}-${id}.img`);
      blobs.inject({ kind, nth: k });
      const r = await runCli(["restore", id, "--to-file", file], cliEnv());
      blobs.clearFaults();
      expect([r.code, r.hung]).toEqual([0, false]);
      expect(r.stderr).toMatch(/retrying after (BodyStalled|BodyCut|ECONNRESET)/);
      expectSameFile(file, image, `CLI restore with ${kind}`);
      expect(fs.existsSync(`${file}${PARTIAL_SUFFIX}`)).toBe(false);
      expect(r.afterLastOutputMs).toBeLessThan(EXIT_GRACE_BOUND_MS);
    }
  }, 120_000);
});

describe("giving up: after the last retry, and on storage that stalls for ever", () => {
  let id: string;
  beforeAll(async () => {
    ({ id } = await makeDisk(4));
  });
  /** Small settings, so the bound is seconds: deadline 1 s, stall 1 s, 3 tries, backoff 100 ms doubling. */
  const FAST = {
    DISKDELTA_REQUEST_TIMEOUT_SECONDS: "1",
    DISKDELTA_BODY_STALL_SECONDS: "1",
    DISKDELTA_RETRY_ATTEMPTS: "3",
    DISKDELTA_RETRY_BASE_MS: "100",
  };
  /**
   * The README's bound for one request: tries × (deadline + stall) + the backoffs (base × 2^(i-1),
   * at most 30 s, for each try but the last); a failing command gives up on at most three requests
   * in a row (the failed one, releasing its hold on the point, the first of its cleanup), then exits
   * within the grace. Plus the process's start.
   */
  const perRequestMs = 3 * (1000 + 1000) + (100 + 200);
  const boundMs = 3 * perRequestMs + 1000 + 3000;

  test("after the last retry the command exits 1 naming the operation, the blob and the range; the sidecar stays", async () => {
    for (const kind of ["stall-body", "fin-body", "stall-headers"] as const) {
      const file = path.join(dir, `giveup-${kind}.img`);
      // The digests read goes through; every read of the point's snapshot fails.
      blobs.inject({ kind, match: (r) => isRead(r) && r.query.has("snapshot"), times: Infinity });
      const r = await runCli(["restore", id, "--to-file", file], cliEnv(FAST));
      blobs.clearFaults();
      const what =
        kind === "stall-body" ? "BodyStalled" : kind === "fin-body" ? "BodyCut" : "HeadersTimedOut";
      expectFailedWithMessage(
        r,
        new RegExp(
          `^diskdelta: read http://127\\.0\\.0\\.1:${blobs.port}/${BACKUP_ACCOUNT}/diskdelta/${id} \\(snapshot [^)]+\\) bytes \\[\\d+, \\d+\\): ${what}`,
        ),
      );
      expect(r.stderr).toMatch(new RegExp(`retrying after ${what} \\(try 2 of 3`));
      expect(fs.existsSync(`${file}${PARTIAL_SUFFIX}`)).toBe(true);
      expect(r.ms).toBeLessThan(boundMs);
      figures.push(
        `FIGURES give-up ${kind}: exit ${r.code} after ${r.ms} ms (bound ${boundMs} ms), exit ${r.afterLastOutputMs} ms after its message`,
      );
    }
  }, 120_000);

  test("a lineage request that gets no answer names the request and is retried", async () => {
    const warnings: string[] = [];
    const log = { ...silentLogger, warn: (m: string) => warnings.push(m) };
    const lineageEngine = await openEngine(log, {
      ...testEngineEnv({ DISKDELTA_RETRY_ATTEMPTS: "2" }),
      AzureWebJobsStorage: cliEnv().AzureWebJobsStorage,
      DISKDELTA_TABLE_PREFIX: engine.config.tablePrefix,
    });
    try {
      expect((await lineageEngine.lineage.getDisk(id))?.id).toBe(id);
      await tables.cut();
      const err = await lineageEngine.lineage.getDisk(id).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err?.code).toBe("ECONNREFUSED");
      expect(err?.message).toMatch(
        new RegExp(
          `^GET http://127\\.0\\.0\\.1:${tables.port}/devstoreaccount1/${engine.config.tablePrefix}Disks\\(PartitionKey='disk',RowKey='${id}'\\): connect ECONNREFUSED`,
        ),
      );
      expect(warnings).toEqual([
        expect.stringMatching(/^retrying after (ECONNRESET|ECONNREFUSED) \(try 1 of 2, .*: GET http/),
      ]);
    } finally {
      await tables.mend();
      await lineageEngine.close();
    }
  });

  test("blob and table storage that stall for ever, from the start or from the k-th read: every command exits by itself within the bound", async () => {
    const cases: Array<[string, string[], number | undefined]> = [
      [
        "restore --to-file, stalled from the start",
        ["restore", id, "--to-file", path.join(dir, "forever-0.img")],
        undefined,
      ],
      [
        "restore --to-file, stalled from read 3",
        ["restore", id, "--to-file", path.join(dir, "forever-3.img")],
        3,
      ],
      ["restore as a disk, stalled from read 4", ["restore", id, "--name", `${id}-forever`], 4],
      ["backup, stalled from read 2", ["backup", id, "--force"], 2],
      ["points, stalled from the start", ["points", id], undefined],
    ];
    for (const [what, args, k] of cases) {
      if (k === undefined) {
        blobs.inject({ kind: "stall-headers", match: anyRequest, times: Infinity });
        tables.inject({ kind: "stall-headers", match: anyRequest, times: Infinity });
      } else {
        // From the k-th read on, nothing answers any more: blobs and tables alike.
        blobs.inject({ kind: "stall-body", nth: k, times: Infinity });
        const trip = blobs.inject({ kind: "drop", nth: Number.MAX_SAFE_INTEGER });
        const watcher = setInterval(() => {
          if (trip.seen >= k) {
            clearInterval(watcher);
            blobs.inject({ kind: "stall-headers", match: (r) => !isRead(r), times: Infinity });
            tables.inject({ kind: "stall-headers", match: anyRequest, times: Infinity });
          }
        }, 5);
        setTimeout(() => clearInterval(watcher), 30_000).unref();
      }
      const r = await runCli(args, cliEnv(FAST), { hangMs: 4 * boundMs });
      blobs.clearFaults();
      tables.clearFaults();
      expect(r.hung).toBe(false);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split("\n").pop()).toMatch(
        /^diskdelta: .*(no answer|HeadersTimedOut|BodyStalled)/,
      );
      expect(r.afterLastOutputMs).toBeLessThan(EXIT_GRACE_BOUND_MS);
      expect(r.ms).toBeLessThan(boundMs);
      // A restore as a disk that gave up says what it could not remove, and that a rerun takes it over.
      if (args.includes("--name"))
        expect(r.stderr).toMatch(
          /left behind by the failed restore \(a rerun of the same restore as \S+ takes them over\): \S+/,
        );
      figures.push(
        `FIGURES stall-forever ${what}: exit ${r.code} after ${r.ms} ms (bound ${boundMs} ms), last message: ${r.stderr.trim().split("\n").pop()}`,
      );
    }
    // The restore as a disk that gave up left its marked targets; with the storage back, its rerun takes them over.
    const rerun = await runCli(["--json", "restore", id, "--name", `${id}-forever`], cliEnv());
    expect(rerun.code).toBe(0);
    expect(JSON.parse(rerun.stdout).replaced).toHaveLength(2);
    expect((await engine.lineage.getDisk(`${id}-forever`))?.id).toBe(`${id}-forever`);
  }, 300_000);
});

describe("bit rot in a sealed snapshot", () => {
  let id: string;
  let disk: TestDisk;
  let point: RestorePointRecord;
  /** A byte inside window 2 ([8 MiB, 12 MiB)), rotten for good. */
  const ROT_AT = 9 * MiB + 1234;
  const WINDOW = "bytes \\[8388608, 12582912\\)";
  beforeAll(async () => {
    ({ id, disk } = await makeDisk(5));
    point = await latestPoint(id);
  });
  const rot = () =>
    blobs.inject({
      kind: "bitrot",
      offset: ROT_AT,
      match: (r) =>
        isRead(r) && onBlob("diskdelta", id)(r) && r.query.get("snapshot") === point.backupSnapshot,
      times: Infinity,
    });

  test("restore to a file exits 1 naming the window, leaves the sidecar, records the point failed and refuses it next time without --allow-damaged", async () => {
    rot();
    const file = path.join(dir, `rot-${id}.img`);
    const r = await runCli(["restore", id, "--to-file", file], cliEnv());
    expectFailedWithMessage(
      r,
      new RegExp(`restore point ${point.id} of disk ${id} is damaged: ${WINDOW}: the window's MD5 differs`),
    );
    // The file never looks done: its sidecar stays, and says how far it is written and checked.
    const sidecar = JSON.parse(fs.readFileSync(`${file}${PARTIAL_SUFFIX}`, "utf8"));
    expect(sidecar.offset).toBeLessThanOrEqual(8 * MiB);
    const recorded = (await engine.lineage.getPoint(id, point.id))!;
    expect(recorded.integrity).toBe("failed");
    expect(recorded.verifyResult).toMatch(/window \[8388608, 12582912\)/);
    const listed = await runCli(["points", id], cliEnv());
    expect(listed.stdout).toMatch(/FAILED/);

    // Refused next time, before anything is read or made.
    const again = path.join(dir, `rot2-${id}.img`);
    const refused = await runCli(["restore", id, "--to-file", again], cliEnv());
    expectFailedWithMessage(
      refused,
      /is recorded as damaged .*; restore another point, or pass --allow-damaged to read it anyway/,
    );
    expect(fs.existsSync(again)).toBe(false);
    const asDisk = await runCli(["restore", id, "--name", `${id}-rot`], cliEnv());
    expectFailedWithMessage(asDisk, /is recorded as damaged/);

    // Asked for on purpose, it is read, and every window is still checked: the rot stops it again.
    const allowed = await runCli(["restore", id, "--name", `${id}-rot`, "--allow-damaged"], cliEnv());
    expectFailedWithMessage(allowed, new RegExp(`is damaged: ${WINDOW}`));
    // Nothing of the failed restore as a disk is left.
    const container = new URL(disk.url).pathname.split("/")[2];
    expect(
      await serviceClient(SOURCE_ACCOUNT)
        .getContainerClient(container)
        .getPageBlobClient(`${id}-rot.vhd`)
        .exists(),
    ).toBe(false);
    expect(await backupBlob(`${id}-rot`).exists()).toBe(false);
    expect(await engine.lineage.getDisk(`${id}-rot`)).toBeUndefined();

    // The rot gone (the proxy stops flipping), --allow-damaged restores it, checked.
    blobs.clearFaults();
    const healed = await runCli(["restore", id, "--to-file", again, "--allow-damaged"], cliEnv());
    expect(healed.code).toBe(0);
    expectSameFile(again, await pointImage(id, point), "restore of the healed point");
  }, 120_000);

  test("a byte flipped in the k-th read, for every k: the restore stops naming that read's window, the point is recorded failed; verify against the source clears it", async () => {
    const file = path.join(dir, `rotk-${id}.img`);
    await verifyPoint(engine, id, { point: point.id });
    const reads = await countRequests(blobs, isRead, () =>
      restoreToFile(engine, id, { path: file, overwrite: true }),
    );
    let stopped = 0;
    let digestsHit = 0;
    for (let k = 1; k <= reads; k++) {
      fs.rmSync(file, { force: true });
      fs.rmSync(`${file}${PARTIAL_SUFFIX}`, { force: true });
      blobs.inject({ kind: "bitrot", nth: k });
      const hit = () => blobs.injected[blobs.injected.length - 1];
      const err = await restoreToFile(engine, id, { path: file }).then(
        () => undefined,
        (e: unknown) => e,
      );
      blobs.clearFaults();
      if (!(err instanceof IntegrityError))
        throw new Error(`read ${k} (${JSON.stringify(hit())}): ${String(err)}`);
      digestsHit += hit().path.includes(".digests/") ? 1 : 0;
      const where = (err as IntegrityError).where!;
      const range = hit().range!;
      if (hit().path.includes(".digests/")) {
        // The digests themselves read back rotten: the point cannot be checked, and says so.
        expect((err as Error).message).toMatch(
          /is damaged: bytes \[\d+, \d+\): (its recorded digests are damaged|the window's MD5 differs|the valid ranges differ|valid in the)/,
        );
      } else {
        // The window named is the one whose read was flipped.
        expect(where.start).toBeLessThanOrEqual(range.start);
        expect(where.end).toBeGreaterThanOrEqual(range.end);
      }
      expect((await engine.lineage.getPoint(id, point.id))!.integrity).toBe("failed");
      expect(fs.existsSync(`${file}${PARTIAL_SUFFIX}`)).toBe(true);
      // Proven intact against its source snapshot again, the point may be restored without the flag.
      const v = await verifyPoint(engine, id, { point: point.id });
      expect(v.ok).toBe(true);
      stopped++;
    }
    expect(digestsHit).toBeGreaterThan(0);
    figures.push(
      `FIGURES bit-rot k-sweep: ${reads} reads (${digestsHit} of the digests), ${stopped} runs stopped with exit 1 naming the window, 0 exit-0`,
    );
  }, 120_000);
});

describe("exit discipline: the storage cut at random moments of restores to a file", () => {
  test("every exit-0 run left a byte-identical image; every other run exited non-zero with a message and left nothing that looks done", async () => {
    const { id } = await makeDisk(6);
    const point = await latestPoint(id);
    const image = await pointImage(id, point);
    const file = path.join(dir, `cut-${id}.img`);
    const rng = seeded(Number(process.env.DISKDELTA_CUT_SEED ?? 20261202));
    const env = cliEnv({
      DISKDELTA_COPY_CONCURRENCY: "1",
      DISKDELTA_RETRY_ATTEMPTS: "3",
      DISKDELTA_RETRY_BASE_MS: "150",
    });
    // Every read's body pauses 150 ms half-way (well under the stall timeout): the restore lasts
    // long enough for a cut to land inside it. A clean run, timed, sets the range of cut moments.
    blobs.inject({ kind: "stall-body", stallMs: 150, times: Infinity });
    const calibration = await runCli(["restore", id, "--to-file", file], env);
    expect(calibration.code).toBe(0);
    const outcomes = { ok: 0, okResumed: 0, failed: 0, failedBeforeFile: 0, cutInside: 0 };
    const messages = new Set<string>();
    const RUNS = Number(process.env.DISKDELTA_CUT_RUNS ?? 30);
    for (let run = 0; run < RUNS; run++) {
      // A finished image is removed (the next run would rightly refuse to overwrite it); of the
      // partial ones, every third starts over and the others resume what the last run left.
      const finished = fs.existsSync(file) && !fs.existsSync(`${file}${PARTIAL_SUFFIX}`);
      if (finished || run % 3 === 0) {
        fs.rmSync(file, { force: true });
        fs.rmSync(`${file}${PARTIAL_SUFFIX}`, { force: true });
      }
      const cutAfter = Math.floor(rng.next() * calibration.ms);
      const downFor = Math.floor(rng.next() * 3000);
      let cut: Promise<void> = Promise.resolve();
      const r = await runCli(["--json", "restore", id, "--to-file", file], env, {
        started: () => {
          cut = new Promise<void>((resolve) =>
            setTimeout(async () => {
              await Promise.all([blobs.cut(), tables.cut()]);
              setTimeout(async () => {
                await Promise.all([blobs.mend(), tables.mend()]);
                resolve();
              }, downFor);
            }, cutAfter),
          );
        },
      });
      await cut;
      // The cut came before the command ended (else this run says nothing about faults).
      if (cutAfter < r.ms) outcomes.cutInside++;
      expect(r.hung).toBe(false);
      expect(r.afterLastOutputMs).toBeLessThan(EXIT_GRACE_BOUND_MS);
      if (r.code === 0) {
        expectSameFile(file, image, `run ${run} (cut at ${cutAfter} ms for ${downFor} ms)`);
        expect(fs.existsSync(`${file}${PARTIAL_SUFFIX}`)).toBe(false);
        if (JSON.parse(r.stdout).resumedFrom > 0) outcomes.okResumed++;
        else outcomes.ok++;
      } else {
        const said = r.stderr.trim().split("\n").pop() ?? "";
        // One line naming what failed: the request, with its URL.
        expect(said).toMatch(/^diskdelta: \S.* http:\/\/127\.0\.0\.1:\d+\//);
        // What failed, without the URL's ids: "read … bytes [n, n): ECONNREFUSED …".
        messages.add(
          said
            .replace(/http:\/\/\S+/g, "<url>")
            .replace(/\(snapshot [^)]+\)/g, "")
            .replace(/\d+/g, "n")
            .slice(0, 110),
        );
        if (fs.existsSync(file)) {
          // The image is there but marked partial: never a finished image.
          expect(fs.existsSync(`${file}${PARTIAL_SUFFIX}`)).toBe(true);
          outcomes.failed++;
        } else outcomes.failedBeforeFile++;
      }
    }
    // With the storage left alone, the same command finishes what the last run left.
    if (fs.existsSync(`${file}${PARTIAL_SUFFIX}`) || !fs.existsSync(file)) {
      const last = await runCli(["restore", id, "--to-file", file], env);
      if (fs.existsSync(`${file}${PARTIAL_SUFFIX}`) || last.code !== 0) throw new Error(last.stderr);
    }
    expectSameFile(file, image, "the last run");
    figures.push(
      `FIGURES storage cut at random (seed ${process.env.DISKDELTA_CUT_SEED ?? 20261202}): ${RUNS} runs (${outcomes.cutInside} cut while running, a clean run took ${calibration.ms} ms), ${outcomes.ok} exit 0 from the start, ${outcomes.okResumed} exit 0 resumed, ${outcomes.failed} exit 1 with the sidecar kept, ${outcomes.failedBeforeFile} exit 1 before any file existed; every exit-0 image byte-identical; messages: ${[...messages].join(" | ")}`,
    );
    expect(outcomes.ok + outcomes.okResumed).toBeGreaterThan(0);
    expect(outcomes.failed + outcomes.failedBeforeFile).toBeGreaterThan(0);
  }, 600_000);
});

describe("exit discipline of the CLI process itself (lib/cli/main.ts runAsProcess)", () => {
  const node = (script: string) => {
    const started = Date.now();
    const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 30_000 });
    return { code: r.status, stderr: r.stderr, ms: Date.now() - started };
  };
  const entry = JSON.stringify(MAIN);

  test("a command whose event loop empties before it ended exits 1 with a message, never 0 in silence", () => {
    const r = node(`require(${entry}).runAsProcess([], () => new Promise(() => {}))`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^diskdelta: the command stopped before its work was done/);
  });

  test("a finished command exits after the grace although a socket stays open; its exit code is the command's", () => {
    const r = node(
      `require(${entry}).runAsProcess([], async () => { require("node:net").createServer().listen(0, "127.0.0.1"); return 3; })`,
    );
    expect(r.code).toBe(3);
    expect(r.ms).toBeLessThan(1000 + 3000);
  });
});

describe("killed and resumed", () => {
  let diff: DiffProxy;
  beforeAll(async () => {
    const s = testStorage();
    diff = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  });
  afterAll(() => diff.close());

  /**
   * The counters a resume must not change. rangesWritten and rangesCleared are left out on
   * purpose: they count ranges per listing piece, so any run's count depends on where its pieces
   * fall (adaptive spans restart at a resume point), killed or not; they are printed, not compared.
   */
  const COUNTERS = [
    "kind",
    "chunksTotal",
    "chunksDone",
    "bytesPlanned",
    "bytesCopied",
    "bytesCleared",
  ] as const;
  const countsOf = (run: RunRecord) => Object.fromEntries(COUNTERS.map((k) => [k, run[k]]));

  test("a backup SIGKILLed mid-copy and resumed counts exactly what the same change counts without a kill", async () => {
    // Two disks, the same bytes, the same change: one backed up plainly, one killed and resumed.
    const SIZE2 = 64 * MiB;
    const env = testEngineEnv({ DISKDELTA_SEGMENT_BYTES: String(4 * MiB), DISKDELTA_COPY_CONCURRENCY: "1" });
    env.DISKDELTA_TABLE_PREFIX = engine.config.tablePrefix;
    const made: Array<{ id: string; disk: TestDisk }> = [];
    for (let i = 0; i < 2; i++) {
      const disk = await createDisk(SIZE2, diff.url);
      const id = uniqueName("kc");
      await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl(diff.url) });
      await writeRandom(disk.client, 0, SIZE2, seeded(7).bytes);
      expect((await backupDisk(engine, id, { trigger: "cli" })).kind).toBe("full");
      const rng = seeded(8);
      await writeRandom(disk.client, 4 * MiB, 40 * MiB, rng.bytes);
      await writeRandom(disk.client, 44 * MiB + 512, 44 * MiB + 8192, rng.bytes);
      await disk.client.clearPages(48 * MiB, 12 * MiB);
      await disk.client.clearPages(61 * MiB, 4096);
      made.push({ id, disk });
    }
    const plain = await backupDisk(engine, made[0].id, { trigger: "cli" });
    expect(plain.state).toBe("succeeded");

    const child = spawn(process.execPath, [cliPath, "backup", made[1].id], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? dir, ...env },
      stdio: "ignore",
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    let killedAt: number | undefined;
    for (let i = 0; i < 2000 && killedAt === undefined; i++) {
      const d = await engine.lineage.getDisk(made[1].id);
      const run = d?.activeRunId ? await engine.lineage.getRun(made[1].id, d.activeRunId) : undefined;
      if (run && (run.checkpoint ?? 0) >= 16 * MiB) {
        child.kill("SIGKILL");
        killedAt = run.checkpoint;
      } else if (child.exitCode !== null) throw new Error("the backup finished before it could be killed");
      else await new Promise((r) => setTimeout(r, 20));
    }
    await exited;
    expect(killedAt).toBeDefined();
    const resumed = await backupDisk(engine, made[1].id, { trigger: "cli" });
    expect(resumed.state).toBe("succeeded");
    expect(countsOf(resumed)).toEqual(countsOf(plain));
    expect(resumed.bytesCleared).toBe(12 * MiB + 4096);
    figures.push(
      `FIGURES killed backup: SIGKILL at checkpoint ${killedAt} of ${SIZE2}; resumed run counts ${JSON.stringify(countsOf(resumed))} = the unkilled run's; ranges written/cleared ${resumed.rangesWritten}/${resumed.rangesCleared} resumed vs ${plain.rangesWritten}/${plain.rangesCleared} unkilled`,
    );
    const images = await Promise.all(
      [plain, resumed].map(async (run, i) => {
        const p = (await engine.lineage.getPoint(made[i].id, run.restorePoint!))!;
        return pointImage(made[i].id, p);
      }),
    );
    expectSameImage(images[1], images[0], "the resumed point against the unkilled one");
  }, 240_000);

  test("a restore SIGKILLed mid-copy leaves marked leftovers, and its rerun takes them over", async () => {
    const { id, disk } = await makeDisk(9);
    const point = await latestPoint(id);
    const name = `${id}-killed`;
    const env = cliEnv({ DISKDELTA_COPY_CONCURRENCY: "1" });
    // Slow the writes of the restore, so it is surely killed in the middle.
    blobs.inject({ kind: "stall-headers", stallMs: 300, match: isPutPage, times: Infinity });
    const container = new URL(disk.url).pathname.split("/")[2];
    const newDisk = serviceClient(SOURCE_ACCOUNT)
      .getContainerClient(container)
      .getPageBlobClient(`${name}.vhd`);
    let child: ChildProcess | undefined;
    const r = runCli(["restore", id, "--name", name], env, { started: (c) => (child = c) });
    for (let i = 0; i < 500; i++) {
      const written = (await newDisk.exists()) ? ((await newDisk.getPageRanges()).pageRange?.length ?? 0) : 0;
      if (written > 0) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    child!.kill("SIGKILL");
    const killed = await r;
    blobs.clearFaults();
    expect(killed.code).toBe(null);
    expect((await newDisk.getProperties()).metadata).toMatchObject({ diskdeltarestoreas: name });
    expect(await backupBlob(name).exists()).toBe(true);
    expect(await engine.lineage.getDisk(name)).toBeUndefined();

    const rerun = await runCli(["--json", "--verbose", "restore", id, "--name", name], env);
    expect(rerun.code).toBe(0);
    expect(rerun.stderr).toMatch(/is the leftover of an interrupted restore as .*; replacing it/);
    expect(JSON.parse(rerun.stdout).replaced.sort()).toEqual(
      [newDisk.url, backupBlob(name).url]
        .map((u) => u.replace(`:${testStorage().blobPort}`, `:${blobs.port}`))
        .sort(),
    );
    expectSameImage(
      await readImage(newDisk),
      await pointImage(id, point),
      "the restored disk after the rerun",
    );
    expect((await engine.lineage.getDisk(name))?.id).toBe(name);
  }, 120_000);
});
