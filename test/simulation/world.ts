/**
 * A simulated world for crash simulations (issue 10: "every crash point, not a few"): the memory
 * storage and the memory lineage are the cloud, which outlives processes; each invocation is a
 * "process" whose every storage and lineage operation runs under a fault plan (lib/core/faults.ts)
 * that can crash it after operation k or fail operation k. The clock is the world's, moved by the
 * test (a dead process's lease lapses when the clock passes it). Everything is deterministic: the
 * same scenario makes the same operations in the same order on every replay, so operation k is
 * the same operation each time.
 */
import { afterSeal } from "../../lib/backup/afterSeal";
import type { BackupDeps } from "../../lib/backup/run";
import { loadConfig, type Config } from "../../lib/config/settings";
import { FaultPlan, underPlan } from "../../lib/core/faults";
import { silentLogger } from "../../lib/core/logger";
import { retryingPort, type RetryPolicy } from "../../lib/core/retry";
import { MemoryLineage } from "../../lib/lineage/memoryStore";
import type { Lineage } from "../../lib/lineage/types";
import { MemoryQueues } from "../../lib/queues/sender";
import { SourceCatalog } from "../../lib/sources/catalog";
import { MemoryStore } from "../../lib/storage/memory";
import type { BlobAddress, PageStore } from "../../lib/storage/port";
import { retrying } from "../../lib/storage/retrying";
import { blobLocation, parseAccountUrl, type BlobLocation } from "../../lib/storage/urls";
import { normalize, type PageRange } from "../../lib/ranges";
import type { App } from "../../lib/app/context";

export const MiB = 1024 * 1024;
export const SOURCE = parseAccountUrl("https://simsource.blob.core.windows.net");
export const BACKUP = parseAccountUrl("https://simbackup.blob.core.windows.net");

export class World {
  store = new MemoryStore();
  lineage = new MemoryLineage();
  queues = new MemoryQueues();
  private time = Date.parse("2026-12-01T00:00:00.000Z");
  readonly config: Config;

  /** A world in the same state, independent from here on (the clock included). */
  clone(): World {
    const copy = new World();
    Object.assign(copy, { config: this.config, time: this.time });
    copy.store = this.store.clone();
    copy.lineage = this.lineage.clone();
    for (const [q, list] of this.queues.sent) copy.queues.sent.set(q, structuredClone(list));
    return copy;
  }

  constructor(env: Record<string, string> = {}) {
    this.config = loadConfig({
      AzureWebJobsStorage: "UseDevelopmentStorage=true",
      DISKDELTA_SEGMENT_BYTES: String(4 * MiB),
      DISKDELTA_COPY_CONCURRENCY: "4",
      DISKDELTA_LIST_LOOKAHEAD: "3",
      DISKDELTA_RETRY_ATTEMPTS: "4",
      DISKDELTA_RUN_LEASE_SECONDS: "60",
      DISKDELTA_PLAN_SECONDS: "100000",
      ...env,
    });
  }

  /** Each reading moves the clock a millisecond: ids made one after another sort in the order made, on every replay. */
  now = (): Date => new Date(this.time++);

  /** Moves the clock: past every lease and hold a dead process left. */
  advance(ms: number): void {
    this.time += ms;
  }

  /** One process: every storage and lineage operation under `plan`, retried as the composition root retries. */
  process(plan: FaultPlan = new FaultPlan()): App {
    const policy: RetryPolicy = {
      attempts: this.config.retryAttempts,
      baseMs: 1,
      sleep: async () => undefined,
    };
    const storage: PageStore = retrying(underPlan<PageStore>(this.store, plan, "storage"), policy);
    const lineage: Lineage = retryingPort(underPlan<Lineage>(this.lineage, plan, "lineage"), policy);
    const hosts = { allowedHosts: [], hasKey: () => true };
    const deps: BackupDeps = {
      config: this.config,
      log: silentLogger,
      now: this.now,
      storage,
      lineage,
      sources: new SourceCatalog(storage, hosts),
      hosts,
      hooks: { afterSeal },
    };
    return { ...deps, queues: this.queues };
  }

  blob(account: "source" | "backup", container: string, name: string): BlobLocation {
    return blobLocation(account === "source" ? SOURCE : BACKUP, container, name);
  }
}

export interface Image {
  size: number;
  valid: PageRange[];
  bytes: Buffer;
}

/** A blob or snapshot read back: its size, valid ranges and the bytes of those ranges (empty pages read as zeros anyway). */
export async function image(store: PageStore, a: BlobAddress): Promise<Image> {
  const props = await store.properties(a);
  if (!props) throw new Error(`${a.location.url}@${a.snapshot ?? ""} does not exist`);
  const valid: PageRange[] = [];
  let marker: string | undefined;
  do {
    const page = await store.listRanges(a, { start: 0, end: props.size }, { marker });
    valid.push(...page.ranges);
    marker = page.next;
  } while (marker);
  const parts: Buffer[] = [];
  for (const r of normalize(valid)) {
    for (let at = r.start; at < r.end; at += 4 * MiB)
      parts.push(await store.read(a, { start: at, end: Math.min(r.end, at + 4 * MiB) }));
  }
  return { size: props.size, valid: normalize(valid), bytes: Buffer.concat(parts) };
}

export function sameImage(a: Image, b: Image): string | undefined {
  if (a.size !== b.size) return `size ${a.size} != ${b.size}`;
  if (JSON.stringify(a.valid) !== JSON.stringify(b.valid))
    return `valid ranges differ: ${JSON.stringify(a.valid)} vs ${JSON.stringify(b.valid)}`;
  if (!a.bytes.equals(b.bytes)) {
    let at = 0;
    while (a.bytes[at] === b.bytes[at]) at++;
    return `bytes differ first at ${at}`;
  }
  return undefined;
}

/** A deterministic byte pattern for a range: the same write gives the same bytes on every replay. */
export function pattern(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
}

/** Bytes a process writes to the backup blob, counted at its storage. */
export function countingWrites(app: App, backupUrl: string): { app: App; written: () => number } {
  let written = 0;
  const storage: PageStore = {
    ...app.storage,
    write: async (a, offset, data, c) => {
      await app.storage.write(a, offset, data, c);
      if (a.kind === "blob" && a.location.url === backupUrl) written += data.length;
    },
    writeFrom: async (a, offset, source, length, c) => {
      await app.storage.writeFrom(a, offset, source, length, c);
      if (a.kind === "blob" && a.location.url === backupUrl) written += length;
    },
  };
  return { app: { ...app, storage }, written: () => written };
}
