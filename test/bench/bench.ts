/**
 * `npm run bench`: measures, in one run against an in-memory Azurite started here, the four numbers
 * that say whether diskdelta keeps its promises on cost: (1) how many bytes an incremental run
 * copies and clears compared with the bytes that really changed (DESIGN.md invariant 5; ideal 1.00);
 * (2) how long an incremental run takes compared with the same disk's full copy; (3) how fast the
 * engine copies compared with the simplest correct SDK loop (sequential 4 MiB download → Put Page)
 * over the same valid ranges; and (4) the engine's peak memory for a 1 TiB sparse disk and for a
 * dense copy, measured in a child process that holds only the engine (invariant 6: memory bounded
 * by concurrency × 4 MiB, never by disk size). Every figure is a ratio or comes with its context so
 * that runs on different machines compare; nothing is asserted: it prints a table and, last, one
 * JSON line for scripts. Sizes come from BENCH_* variables (see PARAMETERS); DISKDELTA_* variables
 * in the environment pass through to the engine; BENCH_VERBOSE=1 prints the engine's log to stderr.
 */
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import os from "node:os";
import path from "node:path";
import { BlobServiceClient, StorageSharedKeyCredential, type PageBlobClient } from "@azure/storage-blob";
import { addDisk } from "../../lib/disks/register";
import { backupDisk, type RunHooks } from "../../lib/backup/run";
import { silentLogger, type Logger } from "../../lib/core/logger";
import { DEV_ACCOUNT, DEV_ACCOUNT_KEY, startAzurite, type RunningAzurite } from "../../lib/emulator/azurite";
import { openEngine, type Engine } from "../../lib/compose";
import type { RunRecord } from "../../lib/lineage/types";
import { seeded } from "../support/disks";
import type { ChildInput, ChildResult } from "./backupChild";
import { MiB, rssMiB } from "./rss";

const KiB = 1024;
const GiB = 1024 * MiB;
const PAGE = 512;
/** Put Page's limit, so the plain loop makes the fewest requests any correct loop can. */
const PUT_PAGE_MAX = 4 * MiB;
const SOURCE_ACCOUNT = "benchsrc";
const BACKUP_ACCOUNT = "benchbak";

type Rng = ReturnType<typeof seeded>;

// ---------------------------------------------------------------------------------------------
// Parameters

function intEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name}=${raw} must be an integer ≥ ${min}`);
  return n;
}

function fractionEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const n = Number(raw);
  if (!(n > 0 && n <= 1)) throw new Error(`${name}=${raw} must be a fraction in (0, 1]`);
  return n;
}

const PARAMETERS = {
  /** 256 MiB: 64 windows and two 128 MiB segments, enough to time; its part of the bench takes about a minute on 2 cores. */
  diskMiB: intEnv("BENCH_DISK_MIB", 256, 8),
  /**
   * Share of the disk written before the first backup. 0.75 leaves holes, as real disks have, so the
   * full copy must skip empty ranges; the extents are 64 KiB-16 MiB, like files and free space.
   */
  fill: fractionEnv("BENCH_FILL", 0.75),
  /** Scattered writes between the two backups; 400 of 512 B-256 KiB (log-uniform) change ~16 MiB, under 10% of the data. */
  writes: intEnv("BENCH_WRITES", 400, 0),
  /** Scattered clears (TRIM/discard) of the same sizes, interleaved with the writes; a whole 4 MiB window is cleared too. */
  clears: intEnv("BENCH_CLEARS", 100, 0),
  /** 1 TiB: a large VM disk, 8192 segments of 128 MiB, so per-segment costs show (~1.5 min for two runs). 0 skips it. */
  sparseGiB: intEnv("BENCH_SPARSE_GIB", 1024, 0),
  /** A handful: the point is the disk's size, not its data. */
  sparseWrites: intEnv("BENCH_SPARSE_WRITES", 8, 1),
  /** Seed of the layout and of the workload (data bytes are random anyway); printed so a run can be replayed. */
  seed: intEnv("BENCH_SEED", crypto.randomInt(1, 2 ** 31), 0),
  /** 1: read the incremental restore point back and compare it with its source snapshot. */
  verify: intEnv("BENCH_VERIFY", 1, 0) > 0,
  /** 1: also measure the child's memory for a full copy of the (dense) disk above. */
  denseRss: intEnv("BENCH_DENSE_RSS", 1, 0) > 0,
};

/** Smallest and largest scattered write or clear: one page, and 256 KiB (a large file-system I/O). */
const CHANGE_MIN_PAGES = 1;
const CHANGE_MAX_PAGES = (256 * KiB) / PAGE;
/** Fill extents: 64 KiB (a small file) to 16 MiB (a large one); long enough to make filling quick. */
const EXTENT_MIN = 64 * KiB;
const EXTENT_MAX = 16 * MiB;
/** RSS growth below this after creating the 1 TiB blob means Azurite keeps it sparse: dense, it would need 1 TiB. */
const SPARSE_RSS_TOLERANCE_MIB = 64;

// ---------------------------------------------------------------------------------------------
// Storage helpers (plain SDK, independent of the engine)

function serviceClient(azurite: RunningAzurite, account: string, key: string): BlobServiceClient {
  return new BlobServiceClient(azurite.blobUrl(account), new StorageSharedKeyCredential(account, key), {
    retryOptions: { maxTries: 1 },
    keepAliveOptions: { enable: true },
  });
}

/** Log-uniform in [min, max] pages: most changes small, a few large, as on a real file system. */
function changePages(rng: Rng): number {
  const span = Math.log(CHANGE_MAX_PAGES + 1) - Math.log(CHANGE_MIN_PAGES);
  const pages = Math.floor(CHANGE_MIN_PAGES * Math.exp(rng.next() * span));
  return Math.min(CHANGE_MAX_PAGES, Math.max(CHANGE_MIN_PAGES, pages));
}

function alignedBetween(rng: Rng, min: number, max: number): number {
  return rng.int(min / PAGE, max / PAGE) * PAGE;
}

/** Writes fresh random bytes at [start, end) in ≤ 4 MiB Put Pages. */
async function writeRandom(blob: PageBlobClient, start: number, end: number): Promise<void> {
  for (let at = start; at < end; at += PUT_PAGE_MAX) {
    const count = Math.min(PUT_PAGE_MAX, end - at);
    await blob.uploadPages(crypto.randomBytes(count), at, count);
  }
}

/** Fills about `fill` of the blob with extents of random data separated by holes. Returns bytes written. */
async function fillDisk(blob: PageBlobClient, size: number, fill: number, rng: Rng): Promise<number> {
  let at = 0;
  let written = 0;
  while (at < size) {
    const extent = Math.min(alignedBetween(rng, EXTENT_MIN, EXTENT_MAX), size - at);
    await writeRandom(blob, at, at + extent);
    written += extent;
    // A hole whose mean keeps written / size ≈ fill.
    const meanGap = (extent * (1 - fill)) / fill;
    at += extent + Math.floor((rng.next() * 2 * meanGap) / PAGE) * PAGE;
  }
  return written;
}

interface Range {
  start: number;
  end: number;
}

/** Valid ranges, sorted and merged: Azurite lists adjacent ranges apart when they were written apart. */
async function validRanges(blob: PageBlobClient, size: number): Promise<Range[]> {
  const listed: Range[] = [];
  for await (const page of blob.listPageRanges(0, size).byPage()) {
    for (const r of page.pageRange ?? []) listed.push({ start: r.start, end: r.end + 1 });
  }
  const out: Range[] = [];
  for (const r of listed.sort((a, b) => a.start - b.start)) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

function bytesOf(ranges: Range[]): number {
  return ranges.reduce((sum, r) => sum + (r.end - r.start), 0);
}

/** One bit of information per page, a byte each: 256 MiB of disk is 512 Ki entries. */
class PageMap {
  readonly bits: Uint8Array;
  constructor(size: number) {
    this.bits = new Uint8Array(size / PAGE);
  }
  static of(size: number, ranges: Range[]): PageMap {
    const map = new PageMap(size);
    for (const r of ranges) map.mark(r.start, r.end);
    return map;
  }
  mark(start: number, end: number, value = 1): void {
    this.bits.fill(value, start / PAGE, end / PAGE);
  }
}

/** Bytes of pages where `pick(a[i], b[i])` holds. */
function countPages(a: PageMap, b: PageMap, pick: (x: number, y: number) => boolean): number {
  let pages = 0;
  for (let i = 0; i < a.bits.length; i++) if (pick(a.bits[i], b.bits[i])) pages++;
  return pages * PAGE;
}

async function readAll(stream: NodeJS.ReadableStream | undefined, count: number): Promise<Buffer> {
  if (!stream) throw new Error("download returned no body");
  const pieces: Buffer[] = [];
  for await (const piece of stream as AsyncIterable<Buffer>) pieces.push(piece);
  const body = Buffer.concat(pieces);
  if (body.length !== count) throw new Error(`download returned ${body.length} of ${count} bytes`);
  return body;
}

/**
 * The baseline: the simplest correct copy of a page blob's data, one request at a time: list the
 * valid ranges, then download ≤ 4 MiB → Put Page, without concurrency. With `md5` it also checks
 * what the engine checks (the range MD5 of each download, the transactional MD5 of each Put Page),
 * which tells the cost of integrity apart from the cost of the engine's machinery.
 */
async function plainCopy(
  source: PageBlobClient,
  target: PageBlobClient,
  size: number,
  md5 = false,
): Promise<number> {
  await target.create(size);
  let bytes = 0;
  for (const r of await validRanges(source, size)) {
    for (let at = r.start; at < r.end; at += PUT_PAGE_MAX) {
      const count = Math.min(PUT_PAGE_MAX, r.end - at);
      const response = await source.download(at, count, { rangeGetContentMD5: md5 });
      const body = await readAll(response.readableStreamBody, count);
      let transactionalContentMD5: Uint8Array | undefined;
      if (md5) {
        transactionalContentMD5 = crypto.createHash("md5").update(body).digest();
        if (!response.contentMD5 || !Buffer.from(response.contentMD5).equals(transactionalContentMD5)) {
          throw new Error(`MD5 mismatch reading [${at}, ${at + count})`);
        }
      }
      await target.uploadPages(body, at, count, { transactionalContentMD5 });
      bytes += count;
    }
  }
  return bytes;
}

/** Compares a restore point with its source snapshot: valid ranges, then bytes window by window. */
async function sameImage(a: PageBlobClient, b: PageBlobClient, size: number): Promise<string | undefined> {
  const [va, vb] = await Promise.all([validRanges(a, size), validRanges(b, size)]);
  if (JSON.stringify(va) !== JSON.stringify(vb)) return "valid ranges differ";
  for (const r of va) {
    for (let at = r.start; at < r.end; at += PUT_PAGE_MAX) {
      const count = Math.min(PUT_PAGE_MAX, r.end - at);
      const [x, y] = await Promise.all([a.downloadToBuffer(at, count), b.downloadToBuffer(at, count)]);
      if (!x.equals(y)) return `bytes differ in [${at}, ${at + count})`;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The engine, in this process and in a child

function engineEnv(azurite: RunningAzurite, keys: Record<string, string>): Record<string, string> {
  const passThrough = Object.fromEntries(
    Object.entries(process.env).filter(
      (e): e is [string, string] =>
        e[0].startsWith("DISKDELTA_") &&
        e[0] !== "DISKDELTA_TABLE_PREFIX" &&
        e[0] !== "DISKDELTA_HOME" &&
        e[1] !== undefined,
    ),
  );
  return {
    ...passThrough,
    AzureWebJobsStorage: azurite.connectionString(DEV_ACCOUNT, DEV_ACCOUNT_KEY),
    STORAGE_ACCOUNT_KEYS: Object.entries(keys)
      .map(([account, key]) => `${account}:${key}`)
      .join(";"),
    DISKDELTA_TABLE_PREFIX: `bench${crypto.randomBytes(4).toString("hex")}`,
  };
}

const stderrLogger: Logger = {
  info: (m) => process.stderr.write(`  [engine] ${m}\n`),
  warn: (m) => process.stderr.write(`  [engine] warn: ${m}\n`),
  error: (m) => process.stderr.write(`  [engine] error: ${m}\n`),
};

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const started = performance.now();
  const value = await work();
  return { value, seconds: (performance.now() - started) / 1000 };
}

/**
 * One backup, timed in two parts: the run itself (snapshot, detect, copy, seal) and the after-seal
 * hook (digests of the new point, retention), which is timed apart so the copy-rate ratios compare
 * copying with copying while the digest cost is still shown.
 */
async function timedBackup(
  engine: Engine,
  diskId: string,
): Promise<{ run: RunRecord; seconds: number; afterSealSeconds: number }> {
  let afterSealSeconds = 0;
  const hooks = engine.hooks;
  const deps = {
    ...engine,
    hooks: {
      ...hooks,
      afterSeal: async (...args: Parameters<NonNullable<RunHooks["afterSeal"]>>) => {
        const { seconds } = await timed(async () => hooks?.afterSeal?.(...args));
        afterSealSeconds += seconds;
      },
    },
  };
  const { value: run, seconds } = await timed(() => backupDisk(deps, diskId, { trigger: "cli" }));
  if (run.state !== "succeeded") throw new Error(`backup of ${diskId} ended ${run.state}: ${run.error}`);
  return { run, seconds: seconds - afterSealSeconds, afterSealSeconds };
}

function backupInChild(env: Record<string, string>, diskId: string): Promise<ChildResult> {
  const input: ChildInput = { engineEnv: env, diskId };
  const child = spawn(process.execPath, ["--expose-gc", path.join(__dirname, "backupChild.js")], {
    env: { ...process.env, BENCH_CHILD: JSON.stringify(input) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`backup child for ${diskId} exited with ${code}`));
      const last = out.trim().split("\n").pop() ?? "";
      try {
        const result = JSON.parse(last) as ChildResult;
        if (result.run.state !== "succeeded") throw new Error(`run ended ${result.run.state}`);
        resolve(result);
      } catch (err) {
        reject(new Error(`backup child for ${diskId}: ${(err as Error).message}; output: ${last}`));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Output

const rows: [string, string, string][] = [];
const notes: string[] = [];
function row(metric: string, value: string, note = ""): void {
  rows.push([metric, value, note]);
}
function section(title: string): void {
  rows.push([`— ${title}`, "", ""]);
}
const fix = (n: number, digits = 2) => n.toFixed(digits);
const mib = (bytes: number) => `${fix(bytes / MiB)} MiB`;
const ratio = (a: number, b: number) => (b === 0 ? (a === 0 ? 1 : Infinity) : a / b);
const round = (n: number, digits = 3) => Number(n.toFixed(digits));

function printTable(): void {
  const table = rows.filter((r) => !r[0].startsWith("— "));
  const w0 = Math.max(...table.map((r) => r[0].length));
  const w1 = Math.max(...table.map((r) => r[1].length));
  for (const [metric, value, note] of rows) {
    if (metric.startsWith("— ")) process.stdout.write(`\n${metric}\n`);
    else process.stdout.write(`  ${metric.padEnd(w0)}  ${value.padStart(w1)}  ${note}`.trimEnd() + "\n");
  }
  for (const note of notes) process.stdout.write(`  ${note}\n`);
}

function progress(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const benchStarted = performance.now();
  const loadBefore = os.loadavg()[0];
  const p = PARAMETERS;
  const rng = seeded(p.seed);
  const keys = {
    [SOURCE_ACCOUNT]: crypto.randomBytes(64).toString("base64"),
    [BACKUP_ACCOUNT]: crypto.randomBytes(64).toString("base64"),
  };
  const azurite = await startAzurite({ accounts: keys });
  const env = engineEnv(azurite, keys);
  const engine = await openEngine(process.env.BENCH_VERBOSE ? stderrLogger : silentLogger, env);
  const concurrency = engine.config.copyConcurrency;
  const source = serviceClient(azurite, SOURCE_ACCOUNT, keys[SOURCE_ACCOUNT]);
  const backup = serviceClient(azurite, BACKUP_ACCOUNT, keys[BACKUP_ACCOUNT]);
  const backupUrl = azurite.blobUrl(BACKUP_ACCOUNT);
  const json: Record<string, unknown> = {};
  try {
    const sources = source.getContainerClient("disks");
    await sources.create();
    const plainTargets = backup.getContainerClient("plain");
    await plainTargets.create();
    const newDisk = async (name: string, size: number) => {
      const blob = sources.getPageBlobClient(name);
      await blob.create(size);
      return blob;
    };

    // Warm-up: JIT, sockets and Azurite's first-use paths, so neither contender pays for them.
    progress("warming up");
    {
      const size = 8 * MiB;
      const blob = await newDisk("warm.vhd", size);
      await writeRandom(blob, 0, size);
      await plainCopy(blob, plainTargets.getPageBlobClient("warm"), size);
      await plainCopy(blob, plainTargets.getPageBlobClient("warmmd5"), size, true);
      await addDisk(engine, { id: "warm", source: blob.url, backupAccount: backupUrl });
      await timedBackup(engine, "warm");
    }

    // 1-3: one dense disk, full copy by the plain loop and by the engine, then an incremental.
    const size = p.diskMiB * MiB;
    const disk = await newDisk("disk.vhd", size);
    progress(`filling ${p.diskMiB} MiB to about ${Math.round(p.fill * 100)}%`);
    const fillTime = await timed(() => fillDisk(disk, size, p.fill, rng));
    const before = await validRanges(disk, size);
    const validBefore = bytesOf(before);

    progress("plain SDK copy, then the same with MD5 checks");
    const plain = await timed(() => plainCopy(disk, plainTargets.getPageBlobClient("disk"), size));
    const plainMd5 = await timed(() => plainCopy(disk, plainTargets.getPageBlobClient("md5"), size, true));
    progress("engine full backup");
    await addDisk(engine, { id: "dense", source: disk.url, backupAccount: backupUrl });
    const full = await timedBackup(engine, "dense");

    progress(`workload: ${p.writes} writes, ${p.clears} clears, one 4 MiB window cleared`);
    const v0 = PageMap.of(size, before);
    const written = new PageMap(size);
    const cleared = new PageMap(size);
    const ops: ("write" | "clear" | "window")[] = [
      ...Array<"write">(p.writes).fill("write"),
      ...Array<"clear">(p.clears).fill("clear"),
      "window",
    ];
    for (let i = ops.length - 1; i > 0; i--) {
      const j = rng.int(0, i);
      [ops[i], ops[j]] = [ops[j], ops[i]];
    }
    const windows = size / (4 * MiB);
    const windowsWithData = Array.from({ length: windows }, (_, w) => w).filter((w) =>
      v0.bits.subarray((w * 4 * MiB) / PAGE, ((w + 1) * 4 * MiB) / PAGE).includes(1),
    );
    const workload = await timed(async () => {
      for (const op of ops) {
        if (op === "window") {
          const w = windowsWithData.length ? windowsWithData[rng.int(0, windowsWithData.length - 1)] : 0;
          await disk.clearPages(w * 4 * MiB, 4 * MiB);
          cleared.mark(w * 4 * MiB, (w + 1) * 4 * MiB);
          continue;
        }
        const pages = changePages(rng);
        const start = rng.int(0, size / PAGE - pages) * PAGE;
        const end = start + pages * PAGE;
        if (op === "write") {
          await writeRandom(disk, start, end);
          written.mark(start, end);
        } else {
          await disk.clearPages(start, end - start);
          cleared.mark(start, end);
        }
      }
    });
    const v1 = PageMap.of(size, await validRanges(disk, size));
    // What an ideal incremental moves: pages written that are still valid (their bytes are new),
    // and pages that held data at the base and hold none now.
    const changedBytes = countPages(written, v1, (w, v) => w === 1 && v === 1);
    const mustClear = countPages(v0, v1, (a, b) => a === 1 && b === 0);
    const clearsIssued = countPages(cleared, cleared, (c) => c === 1);
    const validAfter = countPages(v1, v1, (v) => v === 1);

    progress("engine incremental backup");
    const inc = await timedBackup(engine, "dense");
    let verified = { ok: false, skipped: true, detail: "BENCH_VERIFY=0" };
    if (p.verify) {
      progress("verifying the restore point");
      const point = await engine.lineage.getPoint("dense", inc.run.restorePoint ?? "");
      const problem = point
        ? await sameImage(
            backup
              .getContainerClient("diskdelta")
              .getPageBlobClient("dense")
              .withSnapshot(point.backupSnapshot),
            disk.withSnapshot(inc.run.sourceSnapshot ?? ""),
            size,
          )
        : "no restore point recorded";
      verified = { ok: !problem, skipped: false, detail: problem ?? "identical to its source snapshot" };
    }

    let dense: ChildResult | undefined;
    if (p.denseRss) {
      progress("engine full backup of the same disk in a child process (memory)");
      await addDisk(engine, {
        id: "densemem",
        source: disk.url,
        backupAccount: backupUrl,
        backupBlob: "densemem",
      });
      dense = await backupInChild(env, "densemem");
    }

    // 4: a 1 TiB sparse disk, backed up by a child process that holds only the engine.
    let sparse:
      | {
          size: number;
          rssBefore: number;
          rssAfter: number;
          ranges: number;
          full: ChildResult;
          inc: ChildResult;
          changes: number;
        }
      | undefined;
    if (p.sparseGiB > 0) {
      const sparseSize = p.sparseGiB * GiB;
      progress(`creating a ${p.sparseGiB} GiB sparse disk`);
      const rssBefore = rssMiB();
      const blob = await newDisk("sparse.vhd", sparseSize);
      const scatter = async (n: number) => {
        const at: Range[] = [];
        for (let i = 0; i < n; i++) {
          const pages = changePages(rng);
          const start = Math.floor(rng.next() * (sparseSize / PAGE - pages)) * PAGE;
          await writeRandom(blob, start, start + pages * PAGE);
          at.push({ start, end: start + pages * PAGE });
        }
        return at;
      };
      const first = await scatter(p.sparseWrites);
      const rssAfter = rssMiB();
      const ranges = (await validRanges(blob, sparseSize)).length;
      await addDisk(engine, { id: "sparse", source: blob.url, backupAccount: backupUrl });
      progress("sparse full backup (child)");
      const sparseFull = await backupInChild(env, "sparse");
      // A handful more writes and one earlier write cleared, so the incremental has work of both kinds.
      await scatter(Math.max(1, Math.floor(p.sparseWrites / 2)));
      await blob.clearPages(first[0].start, first[0].end - first[0].start);
      progress("sparse incremental backup (child)");
      const sparseInc = await backupInChild(env, "sparse");
      sparse = {
        size: sparseSize,
        rssBefore,
        rssAfter,
        ranges,
        full: sparseFull,
        inc: sparseInc,
        changes: Math.max(1, Math.floor(p.sparseWrites / 2)) + 1,
      };
    }

    // ---- report
    const cpus = os.cpus();
    const plainRate = plain.value / MiB / plain.seconds;
    const plainMd5Rate = plainMd5.value / MiB / plainMd5.seconds;
    const engineRate = full.run.bytesCopied / MiB / full.seconds;
    const bound = concurrency * 4;
    const totalSeconds = (performance.now() - benchStarted) / 1000;

    section("environment");
    row("node", process.version, `${os.platform()} ${os.arch()}`);
    row("cores", `${cpus.length}`, cpus[0]?.model ?? "");
    row("memory", `${fix(os.totalmem() / GiB, 1)} GiB`);
    row(
      "load average (1 min)",
      `${fix(loadBefore, 1)} → ${fix(os.loadavg()[0], 1)}`,
      "at start → at end; above the core count, other work competed",
    );
    row("storage", "Azurite", "in memory, in this process (see notes)");
    section("parameters");
    row(
      "BENCH_DISK_MIB",
      `${p.diskMiB}`,
      `${mib(validBefore)} of data written in ${fix(fillTime.seconds)} s`,
    );
    row("BENCH_FILL", `${p.fill}`, "share of the disk holding data before the first backup");
    row(
      "BENCH_WRITES/_CLEARS",
      `${p.writes}/${p.clears}`,
      `512 B-256 KiB log-uniform at random offsets, + a 4 MiB window cleared; applied in ${fix(workload.seconds)} s`,
    );
    row("BENCH_SPARSE_GIB", `${p.sparseGiB}`, `${p.sparseWrites} scattered writes (BENCH_SPARSE_WRITES)`);
    row("BENCH_SEED", `${p.seed}`, "replays the layout and the workload");
    row("copy concurrency", `${concurrency}`, "DISKDELTA_COPY_CONCURRENCY");
    row("segment", mib(engine.config.segmentBytes), "DISKDELTA_SEGMENT_BYTES");
    row(
      "copy / diff mode",
      `${engine.config.copyMode}/${engine.config.diffMode}`,
      "DISKDELTA_COPY_MODE / DISKDELTA_DIFF_MODE",
    );

    section("1. incremental run: bytes moved / bytes changed (ideal 1.00)");
    row(
      "changed",
      mib(changedBytes),
      `written and valid afterwards; ${fix((100 * changedBytes) / validAfter, 1)}% of ${mib(validAfter)} valid`,
    );
    row(
      "copied",
      mib(inc.run.bytesCopied),
      `run.bytesCopied; ${inc.run.rangesWritten} ranges in ${inc.run.chunksTotal} chunks`,
    );
    row("copied / changed", fix(ratio(inc.run.bytesCopied, changedBytes), 3), "ideal 1.00");
    row(
      "must clear",
      mib(mustClear),
      `valid at the base, not now (the workload cleared ${mib(clearsIssued)})`,
    );
    row("cleared", mib(inc.run.bytesCleared), `run.bytesCleared; ${inc.run.rangesCleared} ranges`);
    row("cleared / must clear", fix(ratio(inc.run.bytesCleared, mustClear), 3), "ideal 1.00");
    row("detection", `${inc.run.detection}`, inc.run.reason ?? "");
    row("restore point", verified.ok ? "ok" : verified.skipped ? "skipped" : "MISMATCH", verified.detail);

    section("2. time: incremental run / full run of the same disk (lower is better)");
    row("full (first run)", `${fix(full.seconds)} s`, `${mib(full.run.bytesCopied)} copied`);
    row(
      "incremental",
      `${fix(inc.seconds)} s`,
      `${mib(inc.run.bytesCopied)} copied, ${mib(inc.run.bytesCleared)} cleared`,
    );
    row(
      "incremental / full",
      fix(inc.seconds / full.seconds, 3),
      `for scale, changed / valid = ${fix(changedBytes / validAfter, 3)}`,
    );
    row(
      "after seal, full",
      `${fix(full.afterSealSeconds)} s`,
      "digests of the new point and retention (not in the times above); on Azurite every window is read",
    );
    row(
      "after seal, incremental",
      `${fix(inc.afterSealSeconds)} s`,
      "on Azure only the windows the backup blob's diff names are read",
    );

    section("3. copy rate: engine full run / plain SDK loop, same ranges (>1: engine faster)");
    row(
      "plain loop",
      `${fix(plainRate, 1)} MiB/s`,
      `sequential download 4 MiB → Put Page; ${mib(plain.value)} in ${fix(plain.seconds)} s`,
    );
    row(
      "plain loop + MD5",
      `${fix(plainMd5Rate, 1)} MiB/s`,
      "same, checking range MD5 and sending transactional MD5 as the engine does",
    );
    row(
      "engine",
      `${fix(engineRate, 1)} MiB/s`,
      `full run, concurrency ${concurrency}, ${full.run.detection}, ${mib(full.run.bytesCopied)} in ${fix(full.seconds)} s`,
    );
    row("engine / plain", fix(engineRate / plainRate, 3));
    row("engine / plain + MD5", fix(engineRate / plainMd5Rate, 3));
    if (dense) {
      const childRate = dense.run.bytesCopied / MiB / dense.seconds;
      row(
        "engine, own process",
        `${fix(childRate, 1)} MiB/s`,
        `the memory run below: Azurite and the engine on separate event loops (${fix(childRate / plainRate, 3)} × plain)`,
      );
    }

    section(`4. engine memory in a child process (bound: concurrency × 4 MiB = ${bound} MiB)`);
    const memRows = (label: string, r: ChildResult) => {
      row(
        `${label}`,
        `${fix(r.seconds, 1)} s`,
        `${r.run.kind}, ${r.run.detection}; ${mib(r.run.bytesCopied)} copied, ${mib(r.run.bytesCleared)} cleared`,
      );
      row(
        "  RSS before the run",
        `${fix(r.rssBeforeMiB, 1)} MiB`,
        `engine open; ${fix(r.rssAtLoadMiB, 1)} MiB with modules loaded`,
      );
      row(
        "  peak RSS",
        `${fix(r.maxRssMiB, 1)} MiB`,
        `VmHWM; sampled peak ${fix(r.peakRssMiB, 1)} MiB, heap+buffers ${fix(r.peakHeapAndBuffersMiB, 1)} MiB`,
      );
      row(
        "  peak RSS / bound",
        fix(r.maxRssMiB / bound, 2),
        `growth during the run / bound = ${fix((r.maxRssMiB - r.rssBeforeMiB) / bound, 2)}`,
      );
      row(
        "  live heap+buffers",
        `${fix(r.liveAfterMiB, 1)} MiB`,
        `after the run and a forced GC (${fix(r.liveBeforeMiB, 1)} MiB before the run): the rest of the peak was garbage`,
      );
    };
    if (sparse) {
      const growth = sparse.rssAfter - sparse.rssBefore;
      row(
        "sparse disk",
        `${p.sparseGiB} GiB`,
        `${sparse.ranges} valid ranges, ${sparse.size / sparse.full.segmentBytes} segments per run`,
      );
      row(
        "  Azurite's RSS for it",
        `+${fix(growth, 1)} MiB`,
        growth < SPARSE_RSS_TOLERANCE_MIB
          ? "stored sparsely (this process)"
          : "NOT sparse: Azurite allocated it",
      );
      memRows("sparse full run", sparse.full);
      memRows("sparse incremental run", sparse.inc);
    }
    if (dense) memRows(`dense full run (${p.diskMiB} MiB)`, dense);
    section("notes");
    row("total bench time", `${fix(totalSeconds, 1)} s`);
    notes.push(
      "- Azurite runs in this process and shares its event loop with the engine and with the plain loop:",
      "  every contender pays for the server's CPU, so on 2 cores absolute rates are mostly Azurite's.",
      "- Azurite answers page-range diffs wrongly (Azurite#812), so the engine detects by compare: an",
      "  incremental reads every valid page of the source snapshot and of the backup blob. On Azure the",
      "  service diff lists the changes instead, and ratio 2 falls towards changed / valid.",
      "- Azurite has no Put Page From URL (501), so copy mode auto streams: download, MD5, Put Page.",
      "- Azurite 3.37 computes a CRC64 in plain JavaScript over every byte of every Put Page (its",
      "  PageBlobHandler forces it); in CPU profiles of this bench that is the largest single cost, so",
      "  write-heavy phases (fill, full copies) measure Azurite more than the client.",
      "- Memory is measured in a child process holding only the engine (Azurite's blobs live here).",
      "  process.resourceUsage().maxRSS is not used there: on Linux a child's maxRSS starts at the",
      `  parent's RSS at the fork (here it read ${fix(sparse?.full.resourceMaxRssMiB ?? dense?.resourceMaxRssMiB ?? 0, 1)} MiB); VmHWM is the child's own.`,
    );
    printTable();

    Object.assign(json, {
      environment: {
        node: process.version,
        cpus: cpus.length,
        cpuModel: cpus[0]?.model,
        totalMemGiB: round(os.totalmem() / GiB, 1),
        loadAverage: [round(loadBefore, 2), round(os.loadavg()[0], 2)],
      },
      parameters: { ...p, copyConcurrency: concurrency, segmentBytes: engine.config.segmentBytes },
      incremental: {
        changedBytes,
        bytesCopied: inc.run.bytesCopied,
        copiedPerChanged: round(ratio(inc.run.bytesCopied, changedBytes)),
        mustClearBytes: mustClear,
        clearsIssuedBytes: clearsIssued,
        bytesCleared: inc.run.bytesCleared,
        clearedPerMustClear: round(ratio(inc.run.bytesCleared, mustClear)),
        detection: inc.run.detection,
        verified: verified.skipped ? "skipped" : verified.ok ? "ok" : `mismatch: ${verified.detail}`,
      },
      time: {
        fullSeconds: round(full.seconds),
        incrementalSeconds: round(inc.seconds),
        incrementalPerFull: round(inc.seconds / full.seconds),
        fullAfterSealSeconds: round(full.afterSealSeconds),
        incrementalAfterSealSeconds: round(inc.afterSealSeconds),
        changedPerValid: round(changedBytes / validAfter),
      },
      rate: {
        plainMiBps: round(plainRate, 2),
        engineMiBps: round(engineRate, 2),
        plainMd5MiBps: round(plainMd5Rate, 2),
        enginePerPlain: round(engineRate / plainRate),
        enginePerPlainMd5: round(engineRate / plainMd5Rate),
        engineOwnProcessMiBps: dense ? round(dense.run.bytesCopied / MiB / dense.seconds, 2) : undefined,
      },
      memory: {
        boundMiB: bound,
        sparse: sparse && {
          sizeGiB: p.sparseGiB,
          azuriteRssGrowthMiB: round(sparse.rssAfter - sparse.rssBefore, 1),
          full: sparse.full,
          incremental: sparse.inc,
        },
        dense,
      },
      totalSeconds: round(totalSeconds, 1),
    });
    process.stdout.write(`\n${JSON.stringify(json)}\n`);
  } finally {
    await engine.close();
    await azurite.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
