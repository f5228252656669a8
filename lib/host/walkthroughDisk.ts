/**
 * The walkthrough's disk, shared by `npm run demo` (lib/cli/walkthrough.ts) and `npm start` (which
 * registers it when no disk is): the page blob `mypremiumdisk` with a few islands of data, created
 * unless it exists and registered unless registered, through the same use cases and storage port
 * as everything else. With AzureWebJobsStorage unset it lives on the embedded storage's accounts;
 * with it set, on the blob service of that storage account (the two walkthrough accounts exist only
 * on the embedded storage).
 */
import crypto from "node:crypto";
import { ConfigError, loadConfig } from "../config/settings";
import type { Logger } from "../core/logger";
import { openEngine, type Engine } from "../compose";
import { addDisk, DEFAULT_BACKUP_CONTAINER } from "../disks/register";
import { DEV_ACCOUNT, DEV_ACCOUNT_KEY } from "../emulator/azurite";
import type { DiskRecord } from "../lineage/types";
import { normalize, totalBytes, type PageRange } from "../ranges";
import type { BlobAddress, PageStore } from "../storage/port";
import { blobLocation, parseAccountUrl } from "../storage/urls";

/** The walkthrough's names, as in Microsoft's article. */
export const DISK_ID = "mypremiumdisk";
/** The disk the local host (npm start) registers when none is, so the app has something to back up. */
export const WALKTHROUGH_DISK_ID = DISK_ID;
export const SOURCE_ACCOUNT = "mypremiumaccount";
export const SOURCE_CONTAINER = "vhds";
export const SOURCE_BLOB = "mypremiumdisk";
export const BACKUP_ACCOUNT = "mybackupstdaccount";
export const BACKUP_BLOB = "mybackupstdpageblob";

export const KiB = 1024;
export const MiB = 1024 * KiB;
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
export async function openWalkthroughEngine(
  log: Logger,
  role: "cli" | "host" = "cli",
): Promise<{ engine: Engine; accounts: Accounts }> {
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
  const engine = await openEngine(log, env, { role });
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

/** The disk's page blob on the storage port. */
export function walkthroughBlob(accounts: Accounts): BlobAddress {
  return {
    kind: "blob",
    location: blobLocation(parseAccountUrl(accounts.sourceService), SOURCE_CONTAINER, SOURCE_BLOB),
  };
}

/** Every valid range of a blob, through the storage port (the listing is paged). */
export async function validRanges(storage: PageStore, blob: BlobAddress, size: number): Promise<PageRange[]> {
  const ranges: PageRange[] = [];
  let marker: string | undefined;
  do {
    const page = await storage.listRanges(blob, { start: 0, end: size }, { marker });
    ranges.push(...page.ranges);
    marker = page.next;
  } while (marker);
  return normalize(ranges);
}

/** Writes random bytes over `range`, in Put Pages of at most 4 MiB. */
export async function writePages(storage: PageStore, blob: BlobAddress, range: PageRange): Promise<void> {
  for (let at = range.start; at < range.end; at += 4 * MiB) {
    const count = Math.min(4 * MiB, range.end - at);
    await storage.write(blob, at, crypto.randomBytes(count));
  }
}

export function where(range: PageRange): string {
  return `${bytesText(range.end - range.start)} at ${bytesText(range.start)}`;
}

export function percentOf(part: number, whole: number): string {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : "-";
}

/** 1.5 MiB, 64.0 KiB: sizes as people read them. */
export function bytesText(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** Creates the disk with a few islands of data, unless it exists. Returns its size. */
export async function ensureSourceDisk(
  narrator: Say,
  storage: PageStore,
  accounts: Accounts,
): Promise<number> {
  const blob = walkthroughBlob(accounts);
  const props = await storage.properties(blob);
  if (props) {
    if (props.blobType !== "PageBlob")
      throw new Error(
        `${blob.location.url} exists but is a ${props.blobType} blob, not a page blob; delete it`,
      );
    const valid = await validRanges(storage, blob, props.size);
    narrator.say(
      `   exists already: ${bytesText(props.size)}, ${bytesText(totalBytes(valid))} of data in ${valid.length} range(s); the rest is empty pages`,
    );
    return props.size;
  }
  await storage.ensureContainer(blob.location);
  narrator.say(
    `   creating a ${bytesText(DISK_SIZE)} page blob and writing data in ${INITIAL_DATA.length} places:`,
  );
  await storage.create(blob, DISK_SIZE);
  for (const { what, range } of INITIAL_DATA) {
    await writePages(storage, blob, range);
    narrator.say(`     wrote ${where(range)} (${what})`);
  }
  const written = totalBytes(normalize(INITIAL_DATA.map((d) => d.range)));
  narrator.say(
    `   ${bytesText(written)} of data, ${percentOf(written, DISK_SIZE)} of the disk; the rest is empty pages, which a backup never reads or writes`,
  );
  return DISK_SIZE;
}

export async function ensureRegistered(
  narrator: Say,
  engine: Engine,
  accounts: Accounts,
): Promise<DiskRecord> {
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
    source: walkthroughBlob(accounts).location.url,
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
  await ensureSourceDisk(narrator, engine.storage, accounts);
  return ensureRegistered(narrator, engine, accounts);
}
