/**
 * `npm run demo`: Microsoft's "back up VM disks with incremental snapshots" walkthrough, carried out
 * by diskdelta on the embedded Azurite (or, when AzureWebJobsStorage is set, on the account it
 * names). Guarantees: it can be run again and again — the first run creates the disk
 * `mypremiumdisk`, registers it and takes a full backup; every run then writes and clears pages of
 * the disk, takes an incremental backup and prints the lineage (runs and restore points), so each
 * run adds to the history the last one left under .diskdelta/. It goes through the same use cases
 * as the CLI (addDisk, backupDisk), never prints a key, and exits non-zero with the reason on
 * stderr (the CLI's exit codes) when a step fails.
 */
import crypto from "node:crypto";
import type { BlobServiceClient, PageBlobClient } from "@azure/storage-blob";
import { addDisk, DEFAULT_BACKUP_CONTAINER } from "../backup/disks";
import { backupDisk, type Logger, type Progress } from "../backup/run";
import { isNotFound } from "../azure/errors";
import { parseAccountUrl } from "../azure/urls";
import { ConfigError, loadConfig } from "../config";
import { DEV_ACCOUNT, DEV_ACCOUNT_KEY } from "../emulator/azurite";
import { openEngine, type Engine } from "../engine";
import type { DiskRecord, RunRecord } from "../lineage/types";
import {
  fromInclusive,
  intersect,
  normalize,
  PAGE_SIZE,
  subtract,
  totalBytes,
  type PageRange,
} from "../ranges";
import { duration, exitCodeFor, table } from "./main";
import { formatBytes, ProgressBar } from "./progress";

/** The walkthrough's names, as in Microsoft's article. */
const DISK_ID = "mypremiumdisk";
/** The disk the local host (npm start) registers when none is, so the app has something to back up. */
export const WALKTHROUGH_DISK_ID = DISK_ID;
const SOURCE_ACCOUNT = "mypremiumaccount";
const SOURCE_CONTAINER = "vhds";
const SOURCE_BLOB = "mypremiumdisk";
const BACKUP_ACCOUNT = "mybackupstdaccount";
const BACKUP_BLOB = "mybackupstdpageblob";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Big enough that "only the changed pages" is visibly a small fraction, small enough to create in a moment. */
const DISK_SIZE = 64 * MiB;

/** Where a fresh disk gets data: a few islands, like a freshly installed VM; the rest stays empty pages. */
const INITIAL_DATA: { what: string; range: PageRange }[] = [
  { what: "boot sector and partition table", range: { start: 0, end: 1 * MiB } },
  { what: "file-system metadata", range: { start: 8 * MiB, end: 10 * MiB } },
  { what: "a few files", range: { start: 33 * MiB + 4 * KiB, end: 33 * MiB + 516 * KiB } },
  { what: "the end of the disk", range: { start: 63 * MiB, end: 63 * MiB + 64 * KiB } },
];

/** Where the steps that create and register the disk tell what they did. */
export interface Say {
  say(line?: string): void;
}

/** Narration on stdout; the progress bar (stderr, terminals only) is cleared before each line. */
class Narrator implements Say {
  bar?: ProgressBar;

  say(line = ""): void {
    this.bar?.done();
    process.stdout.write(`${line}\n`);
  }

  step(n: number, title: string): void {
    this.say();
    this.say(`${n}. ${title}`);
  }

  logger(): Logger {
    return {
      info: (m) => this.say(`   · ${m}`),
      warn: (m) => {
        this.bar?.done();
        process.stderr.write(`warning: ${m}\n`);
      },
      // Failures reach the user once, from the final catch, with the exit code.
      error: () => undefined,
    };
  }
}

export interface Accounts {
  where: string;
  sourceService: string;
  backupService: string;
}

/**
 * With AzureWebJobsStorage set, the walkthrough's two accounts do not exist: the disk and its
 * backup both go to the blob service of that storage account. Its key, when the connection string
 * carries one, is handed to the engine as STORAGE_ACCOUNT_KEYS would (in memory, never printed).
 */
function storageAccountOf(env: NodeJS.ProcessEnv): { serviceUrl: string; account: string; key?: string } {
  const cs = env.AzureWebJobsStorage?.trim();
  if (cs) {
    if (cs === "UseDevelopmentStorage=true") {
      return {
        serviceUrl: `http://127.0.0.1:10000/${DEV_ACCOUNT}`,
        account: DEV_ACCOUNT,
        key: DEV_ACCOUNT_KEY,
      };
    }
    const parts = new Map<string, string>();
    for (const part of cs.split(";")) {
      const eq = part.indexOf("=");
      if (eq > 0) parts.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
    }
    const account = parts.get("accountname");
    const serviceUrl =
      parts.get("blobendpoint")?.replace(/\/+$/, "") ??
      (account
        ? `${parts.get("defaultendpointsprotocol") ?? "https"}://${account}.blob.${parts.get("endpointsuffix") ?? "core.windows.net"}`
        : undefined);
    if (!serviceUrl) {
      throw new ConfigError([
        "AzureWebJobsStorage names no blob endpoint (BlobEndpoint= or AccountName=) for the walkthrough's disk",
      ]);
    }
    const parsed = parseAccountUrl(serviceUrl, "the blob endpoint of AzureWebJobsStorage");
    return { serviceUrl: parsed.serviceUrl, account: parsed.account, key: parts.get("accountkey") };
  }
  const table =
    env.AzureWebJobsStorage__tableServiceUri?.trim() ||
    (env.AzureWebJobsStorage__accountName?.trim()
      ? `https://${env.AzureWebJobsStorage__accountName.trim()}.table.core.windows.net`
      : "");
  const blob = table.replace(/\.table\./, ".blob.").replace(/\/+$/, "");
  if (blob === table) {
    throw new ConfigError([
      `cannot tell the blob endpoint of the lineage storage from ${table || "the settings"} for the walkthrough's disk`,
    ]);
  }
  const parsed = parseAccountUrl(blob, "the blob endpoint of AzureWebJobsStorage");
  return { serviceUrl: parsed.serviceUrl, account: parsed.account };
}

/**
 * Opens the engine for the walkthrough's disk: on the embedded default, with its two accounts; on
 * AzureWebJobsStorage, with that account's key (when the connection string has one) handed over.
 */
export async function openWalkthroughEngine(log: Logger): Promise<{ engine: Engine; accounts: Accounts }> {
  const env = { ...process.env };
  const usesStorage = Boolean(
    env.AzureWebJobsStorage?.trim() ||
    env.AzureWebJobsStorage__tableServiceUri?.trim() ||
    env.AzureWebJobsStorage__accountName?.trim(),
  );
  let own: ReturnType<typeof storageAccountOf> | undefined;
  if (usesStorage) {
    // Settings are validated first, so a bad one gets the usual ConfigError naming it.
    loadConfig(env);
    own = storageAccountOf(env);
    const listed = (env.STORAGE_ACCOUNT_KEYS ?? "").split(";").map((e) => e.trim().split(":")[0]);
    if (own.key && !listed.includes(own.account)) {
      env.STORAGE_ACCOUNT_KEYS = [env.STORAGE_ACCOUNT_KEYS, `${own.account}:${own.key}`]
        .filter(Boolean)
        .join(";");
    }
  }
  const engine = await openEngine(log, env);
  if (engine.embedded) {
    return {
      engine,
      accounts: {
        where: `the embedded Azurite at ${new URL(engine.embedded.blobUrl(SOURCE_ACCOUNT)).origin}, data in ${engine.config.home} (AzureWebJobsStorage is unset)`,
        sourceService: engine.embedded.blobUrl(SOURCE_ACCOUNT),
        backupService: engine.embedded.blobUrl(BACKUP_ACCOUNT),
      },
    };
  }
  return {
    engine,
    accounts: {
      where: `account ${own!.account} of AzureWebJobsStorage (${own!.serviceUrl}); the walkthrough's accounts ${SOURCE_ACCOUNT} and ${BACKUP_ACCOUNT} exist only on the embedded Azurite, so the disk and its backup share this one`,
      sourceService: own!.serviceUrl,
      backupService: own!.serviceUrl,
    },
  };
}

async function validRanges(blob: PageBlobClient, size: number): Promise<PageRange[]> {
  const ranges: PageRange[] = [];
  for await (const page of blob.listPageRanges(0, size).byPage()) {
    for (const r of page.pageRange ?? []) ranges.push(fromInclusive(r));
  }
  return normalize(ranges);
}

async function writePages(blob: PageBlobClient, range: PageRange): Promise<void> {
  // Put Page takes at most 4 MiB.
  for (let at = range.start; at < range.end; at += 4 * MiB) {
    const count = Math.min(4 * MiB, range.end - at);
    await blob.uploadPages(crypto.randomBytes(count), at, count);
  }
}

function where(range: PageRange): string {
  return `${formatBytes(range.end - range.start)} at ${formatBytes(range.start)}`;
}

function percentOf(part: number, whole: number): string {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : "-";
}

/** A random page-aligned range of at most `length` bytes inside one of `ranges`, or undefined if there is none. */
function pickInside(ranges: PageRange[], length: number): PageRange | undefined {
  if (ranges.length === 0) return undefined;
  const host = ranges[crypto.randomInt(ranges.length)];
  const pages = Math.min(length, host.end - host.start) / PAGE_SIZE;
  const hostPages = (host.end - host.start) / PAGE_SIZE;
  const start = host.start + crypto.randomInt(hostPages - pages + 1) * PAGE_SIZE;
  return { start, end: start + pages * PAGE_SIZE };
}

function pickAnywhere(size: number, length: number): PageRange {
  const start = crypto.randomInt((size - length) / PAGE_SIZE + 1) * PAGE_SIZE;
  return { start, end: start + length };
}

/** Creates the disk with a few islands of data, unless it exists. Returns its size. */
async function ensureSourceDisk(narrator: Say, service: BlobServiceClient): Promise<number> {
  const container = service.getContainerClient(SOURCE_CONTAINER);
  const blob = container.getPageBlobClient(SOURCE_BLOB);
  try {
    const props = await blob.getProperties();
    if (props.blobType !== "PageBlob") {
      throw new Error(`${blob.url} exists but is a ${props.blobType} blob, not a page blob; delete it`);
    }
    const size = props.contentLength ?? 0;
    const valid = await validRanges(blob, size);
    narrator.say(
      `   exists already: ${formatBytes(size)}, ${formatBytes(totalBytes(valid))} of data in ${valid.length} range(s); the rest is empty pages`,
    );
    return size;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  await container.createIfNotExists();
  narrator.say(
    `   creating a ${formatBytes(DISK_SIZE)} page blob and writing data in ${INITIAL_DATA.length} places:`,
  );
  await blob.create(DISK_SIZE);
  for (const { what, range } of INITIAL_DATA) {
    await writePages(blob, range);
    narrator.say(`     wrote ${where(range)} (${what})`);
  }
  const written = totalBytes(normalize(INITIAL_DATA.map((d) => d.range)));
  narrator.say(
    `   ${formatBytes(written)} of data, ${percentOf(written, DISK_SIZE)} of the disk; the rest is empty pages, which a backup never reads or writes`,
  );
  return DISK_SIZE;
}

async function ensureRegistered(narrator: Say, engine: Engine, accounts: Accounts): Promise<DiskRecord> {
  const existing = await engine.lineage.getDisk(DISK_ID);
  if (existing) {
    const points = await engine.lineage.listPoints(DISK_ID);
    narrator.say(
      `   registered already: backs up to ${existing.backupAccountUrl}/${existing.backupContainer}/${existing.backupBlob}, ${points.length} restore point(s) so far`,
    );
    return existing;
  }
  const disk = await addDisk(engine, {
    id: DISK_ID,
    source: `${accounts.sourceService}/${SOURCE_CONTAINER}/${SOURCE_BLOB}`,
    backupAccount: accounts.backupService,
    backupContainer: DEFAULT_BACKUP_CONTAINER,
    backupBlob: BACKUP_BLOB,
  });
  narrator.say(`   registered disk ${disk.id}:`);
  narrator.say(`     source       ${disk.sourceUrl}`);
  narrator.say(`     backup blob  ${disk.backupAccountUrl}/${disk.backupContainer}/${disk.backupBlob}`);
  return disk;
}

/**
 * The walkthrough's first two steps: the page blob `mypremiumdisk` with a few islands of data
 * (created unless it exists) and its registration (unless registered). Safe to repeat.
 */
export async function ensureWalkthroughDisk(
  narrator: Say,
  engine: Engine,
  accounts: Accounts,
): Promise<DiskRecord> {
  await ensureSourceDisk(narrator, engine.clients.blobService(parseAccountUrl(accounts.sourceService)));
  return ensureRegistered(narrator, engine, accounts);
}

/** What the walkthrough changed on the disk since its last backup, as a VM would between two backup windows. */
interface Changes {
  written: number;
  cleared: number;
}

async function changeDisk(narrator: Narrator, blob: PageBlobClient, size: number): Promise<Changes> {
  const before = await validRanges(blob, size);
  const clears: PageRange[] = [];
  const writes: PageRange[] = [];
  // Clears first, then writes: a page both cleared and rewritten ends up written.
  const clear = pickInside(before, 512 * KiB);
  if (clear) {
    await blob.clearPages(clear.start, clear.end - clear.start);
    clears.push(clear);
    narrator.say(`     cleared ${where(clear)} (a deleted file, trimmed: the pages become empty)`);
  }
  const planned: { what: string; range: PageRange | undefined }[] = [
    { what: "rewrote part of a file", range: pickInside(subtract(before, clears), 256 * KiB) },
    { what: "new data", range: pickAnywhere(size, 64 * KiB) },
    { what: "a log entry", range: pickAnywhere(size, 4 * KiB) },
  ];
  for (const { what, range } of planned) {
    if (!range) continue;
    await writePages(blob, range);
    writes.push(range);
    narrator.say(`     wrote ${where(range)} (${what})`);
  }
  const written = totalBytes(normalize(writes));
  // Only pages that held data and were not written again count as cleared.
  const cleared = totalBytes(subtract(intersect(clears, before), writes));
  narrator.say(
    `   changed since the last backup: ${formatBytes(written)} written, ${formatBytes(cleared)} cleared, of a ${formatBytes(size)} disk`,
  );
  return { written, cleared };
}

async function backUp(narrator: Narrator, engine: Engine, copying: string): Promise<RunRecord> {
  const bar = new ProgressBar();
  narrator.bar = bar;
  let phase: Progress["phase"] | undefined;
  try {
    narrator.say(`   taking a snapshot of ${SOURCE_BLOB}…`);
    return await backupDisk(engine, DISK_ID, {
      trigger: "cli",
      onProgress: (p) => {
        if (p.phase !== phase) {
          phase = p.phase;
          if (phase === "copying") narrator.say(`   ${copying}…`);
          if (phase === "sealing") narrator.say(`   sealing: snapshot of ${BACKUP_BLOB} → restore point…`);
        }
        bar.update(p);
      },
    });
  } finally {
    bar.done();
    narrator.bar = undefined;
  }
}

function describeRun(narrator: Narrator, run: RunRecord, expected?: Changes): void {
  const size = run.sourceSize ?? 0;
  narrator.say(
    `   run ${run.id}: ${run.kind}, detection ${run.detection ?? "-"}, ${run.state} in ${duration(run)}`,
  );
  if (run.reason) narrator.say(`     why ${run.detection}: ${run.reason}`);
  narrator.say(
    `     copied ${formatBytes(run.bytesCopied)} (${run.bytesCopied} bytes, ${percentOf(run.bytesCopied, size)} of the ${formatBytes(size)} disk), cleared ${formatBytes(run.bytesCleared)}`,
  );
  if (expected) {
    const exact = run.bytesCopied === expected.written && run.bytesCleared === expected.cleared;
    narrator.say(
      exact
        ? `     exactly the pages changed since the last backup, nothing more`
        : `     the walkthrough changed ${expected.written} bytes written and ${expected.cleared} cleared; the run found ${run.bytesCopied} and ${run.bytesCleared}`,
    );
  }
  narrator.say(`     restore point ${run.restorePoint} = snapshot ${run.backupSnapshot} of ${BACKUP_BLOB}`);
}

async function printLineage(narrator: Narrator, engine: Engine): Promise<void> {
  const runs = await engine.lineage.listRuns(DISK_ID, 1000);
  const points = await engine.lineage.listPoints(DISK_ID, 1000);
  narrator.say(`   runs of ${DISK_ID}, newest first (${runs.length}):`);
  narrator.say(
    indent(
      table([
        ["RUN", "KIND", "DETECTION", "STATE", "DURATION", "COPIED", "CLEARED", "RESTORE POINT"],
        ...runs.map((r) => [
          r.id,
          r.kind,
          r.detection ?? "-",
          r.state,
          duration(r),
          formatBytes(r.bytesCopied),
          formatBytes(r.bytesCleared),
          r.restorePoint ?? (r.error ? `error: ${r.error}` : "-"),
        ]),
      ]),
    ),
  );
  narrator.say();
  narrator.say(`   restore points, newest first (${points.length}):`);
  narrator.say(
    indent(
      table([
        ["RESTORE POINT", "KIND", "CREATED", "SIZE", "BACKUP SNAPSHOT"],
        ...points.map((p) => [p.id, p.kind, p.createdAt, formatBytes(p.size), p.backupSnapshot]),
      ]),
    ),
  );
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `     ${l}`)
    .join("\n");
}

export async function walkthrough(): Promise<void> {
  const narrator = new Narrator();
  narrator.say("diskdelta walkthrough: back up a VM disk with incremental snapshots");
  const { engine, accounts } = await openWalkthroughEngine(narrator.logger());
  try {
    narrator.say(`storage: ${accounts.where}`);
    let step = 0;
    const sourceService = engine.clients.blobService(parseAccountUrl(accounts.sourceService));
    narrator.step(++step, `The disk: page blob ${SOURCE_BLOB} in container ${SOURCE_CONTAINER}`);
    const size = await ensureSourceDisk(narrator, sourceService);
    const blob = sourceService.getContainerClient(SOURCE_CONTAINER).getPageBlobClient(SOURCE_BLOB);

    narrator.step(++step, `Protect it: register disk ${DISK_ID} with backup blob ${BACKUP_BLOB}`);
    let disk = await ensureRegistered(narrator, engine, accounts);

    if (!disk.baseSnapshot) {
      narrator.step(
        ++step,
        `Full backup (the article's ${SOURCE_BLOB}_ss1 → ${BACKUP_BLOB}): snapshot, copy the valid ranges only, seal`,
      );
      describeRun(
        narrator,
        await backUp(narrator, engine, `copying the disk's valid ranges to ${BACKUP_BLOB}`),
      );
      disk = (await engine.lineage.getDisk(DISK_ID)) ?? disk;
    }

    narrator.step(++step, `The VM works: write and clear pages of ${SOURCE_BLOB}`);
    const changes = await changeDisk(narrator, blob, size);

    // The article numbers the disk's snapshots ss1, ss2, …: one per restore point.
    const next = (await engine.lineage.listPoints(DISK_ID, 1000)).length + 1;
    narrator.step(
      ++step,
      `Incremental backup (the article's ${SOURCE_BLOB}_ss${next}): snapshot, find the pages changed since the base, copy and clear only those, seal, advance the base`,
    );
    describeRun(
      narrator,
      await backUp(narrator, engine, `finding the changed pages and applying them to ${BACKUP_BLOB}`),
      changes,
    );

    narrator.step(++step, "The lineage");
    await printLineage(narrator, engine);

    narrator.say();
    narrator.say(`Run 'npm run demo' again for another incremental cycle, or look around with`);
    narrator.say(`  npx diskdelta disk list`);
    narrator.say(`  npx diskdelta runs ${DISK_ID}`);
    narrator.say(`  npx diskdelta points ${DISK_ID}`);
    narrator.say(
      `  npx diskdelta verify ${DISK_ID}                      (prove the newest point equals its snapshot)`,
    );
    narrator.say(
      `  npx diskdelta restore ${DISK_ID} --point latest      (a new disk, backed up incrementally from there)`,
    );
    narrator.say(`and 'npm start' serves the same disk through the Functions app (HTTP API, timer, queues).`);
    if (engine.embedded) narrator.say(`Delete ${engine.config.home} to start over.`);
  } finally {
    await engine.close();
  }
}

if (require.main === module) {
  walkthrough().then(
    () => undefined,
    (err: unknown) => {
      process.stderr.write(`diskdelta walkthrough: ${(err as Error)?.message ?? String(err)}\n`);
      process.exitCode = exitCodeFor(err);
    },
  );
}
