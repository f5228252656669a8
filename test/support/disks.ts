/**
 * Helpers for tests that back up real page blobs on the shared Azurite: make a source disk, change
 * it at random (writes, clears, grow, shrink), read a blob or snapshot back as bytes plus its valid
 * ranges, and open an engine on the test storage with its own lineage tables.
 */
import crypto from "node:crypto";
import { BlobServiceClient, StorageSharedKeyCredential, type PageBlobClient } from "@azure/storage-blob";
import { openEngine, type Engine } from "../../lib/compose";
import { silentLogger, type Logger } from "../../lib/core/logger";
import { fromInclusive, normalize, type PageRange } from "../../lib/ranges";
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, testStorage, uniqueName } from "./testEnv";

export const MiB = 1024 * 1024;

export function serviceClient(account: string, baseUrl?: string): BlobServiceClient {
  const s = testStorage();
  return new BlobServiceClient(
    baseUrl ? `${baseUrl}/${account}` : s.blobUrl(account),
    new StorageSharedKeyCredential(account, s.keys[account]),
    { retryOptions: { maxTries: 1 } },
  );
}

export interface TestDisk {
  container: string;
  blob: string;
  client: PageBlobClient;
  /** URL of the disk as registered (through `baseUrl` when given, e.g. a diff proxy). */
  url: string;
}

export async function createDisk(size: number, baseUrl?: string): Promise<TestDisk> {
  const container = uniqueName("src");
  const blob = "disk.vhd";
  const svc = serviceClient(SOURCE_ACCOUNT);
  await svc.getContainerClient(container).create();
  const client = svc.getContainerClient(container).getPageBlobClient(blob);
  await client.create(size);
  const base = baseUrl ?? `http://127.0.0.1:${testStorage().blobPort}`;
  return { container, blob, client, url: `${base}/${SOURCE_ACCOUNT}/${container}/${blob}` };
}

export function backupAccountUrl(baseUrl?: string): string {
  return `${baseUrl ?? `http://127.0.0.1:${testStorage().blobPort}`}/${BACKUP_ACCOUNT}`;
}

/** Writes random bytes at [start, end) (512-aligned), in ≤ 4 MiB Put Pages. Returns the range. */
export async function writeRandom(
  client: PageBlobClient,
  start: number,
  end: number,
  rng = crypto.randomBytes,
): Promise<PageRange> {
  for (let at = start; at < end; at += 4 * MiB) {
    const count = Math.min(4 * MiB, end - at);
    await client.uploadPages(rng(count), at, count);
  }
  return { start, end };
}

/** The snapshot ids in a container (of blobs whose name starts with `prefix`). */
export async function snapshotsIn(account: string, container: string, prefix?: string): Promise<string[]> {
  const found: string[] = [];
  for await (const b of serviceClient(account)
    .getContainerClient(container)
    .listBlobsFlat({ includeSnapshots: true, prefix })) {
    if (b.snapshot) found.push(b.snapshot);
  }
  return found;
}

export interface Image {
  size: number;
  bytes: Buffer;
  valid: PageRange[];
}

export async function readImage(client: PageBlobClient): Promise<Image> {
  const props = await client.getProperties();
  const size = props.contentLength ?? 0;
  const valid: PageRange[] = [];
  for await (const page of client.listPageRanges(0, size).byPage()) {
    for (const r of page.pageRange ?? []) valid.push(fromInclusive(r));
  }
  const bytes = size > 0 ? await client.downloadToBuffer(0, size) : Buffer.alloc(0);
  return { size, bytes, valid: normalize(valid) };
}

/** Asserts two images are identical: size, bytes and valid-range map. */
export function expectSameImage(actual: Image, expected: Image, what: string): void {
  if (actual.size !== expected.size) throw new Error(`${what}: size ${actual.size} != ${expected.size}`);
  if (!actual.bytes.equals(expected.bytes)) {
    let at = 0;
    while (at < actual.size && actual.bytes[at] === expected.bytes[at]) at++;
    throw new Error(`${what}: bytes differ first at offset ${at} (page ${Math.floor(at / 512)})`);
  }
  const a = JSON.stringify(actual.valid);
  const e = JSON.stringify(expected.valid);
  if (a !== e) throw new Error(`${what}: valid ranges differ:\n  got      ${a}\n  expected ${e}`);
}

/** A deterministic pseudo-random generator (mulberry32), so a failing cycle can be replayed from its seed. */
export function seeded(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    bytes: (n: number) => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i += 4) b.writeUInt32LE((next() * 4294967296) >>> 0, i);
      return b;
    },
  };
}

export interface EngineOptions {
  env?: Record<string, string>;
  log?: Logger;
}

/** An engine on the test storage with lineage tables of its own. */
export async function testEngine(options: EngineOptions = {}): Promise<Engine> {
  return openEngine(options.log ?? silentLogger, testEngineEnv(options.env));
}

export function testEngineEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const s = testStorage();
  return {
    AzureWebJobsStorage: s.webJobsStorage,
    STORAGE_ACCOUNT_KEYS: s.storageAccountKeys,
    DISKDELTA_TABLE_PREFIX: uniqueName("t"),
    DISKDELTA_RETRY_BASE_MS: "20",
    ...extra,
  };
}
