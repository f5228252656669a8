/**
 * The storage port: everything the engine does to page blobs (and the few small block blobs that
 * hold digests), as one narrow interface with three implementations — Azure (the SDK; the only
 * code that imports @azure/storage-blob), memory (for simulations that enumerate every crash
 * point), and a fault-injecting wrapper — held to one contract suite (test/contract/storage.ts),
 * so the memory store cannot drift from the real one.
 *
 * Guarantees every implementation gives:
 * - ranges are half-open, 512-aligned, normalized per page of a listing, and clipped to the span
 *   asked for; a listing page carries a continuation marker until the span is done;
 * - `read` returns exactly the bytes asked for (≤ 4 MiB) or throws; the Azure store checks the
 *   service's range MD5 and throws a retryable error on a mismatch, a stall or a cut body;
 * - `write` sends a transactional MD5, so the service checks every byte it stores;
 * - a `fence` makes a write conditional on the blob's sequence number (412 otherwise);
 * - errors are StorageErrors (status, code, the operation and what it was applied to), whose
 *   message names the blob and range and never carries a credential;
 * - nothing is retried here: retrying.ts wraps any implementation with the one retry policy.
 */
import type { Secret } from "../core/secret";
import type { PageRange } from "../ranges";
import type { BlobLocation } from "./urls";

/** A page blob, or one of its snapshots, reached with the configured credentials (key or identity). */
export interface BlobAddress {
  kind: "blob";
  location: BlobLocation;
  snapshot?: string;
}

/** A page blob reached through a SAS URL that ARM handed out (a managed disk or its snapshot). */
export interface SasAddress {
  kind: "sas";
  url: Secret;
  /** What to call it in messages: a resource id, never the URL. */
  label: string;
}

export type PageAddress = BlobAddress | SasAddress;

export function blobAt(location: BlobLocation, snapshot?: string): BlobAddress {
  return snapshot ? { kind: "blob", location, snapshot } : { kind: "blob", location };
}

/** How an address is named in messages and logs: its URL (never a query), or its label. */
export function describeAddress(a: PageAddress): string {
  if (a.kind === "sas") return a.label;
  return a.snapshot ? `${a.location.url} (snapshot ${a.snapshot})` : a.location.url;
}

export interface BlobProperties {
  size: number;
  blobType?: string;
  sequenceNumber: number;
  metadata: Record<string, string>;
  /** A lease is held on the blob (someone uses it as a live disk). */
  leased: boolean;
  /** Who answered (`Server` header): Azurite answers page-range diffs wrongly (Azure/Azurite#812). */
  server?: string;
}

/** One page of a listing: valid ranges (or, for a diff, pages written) and pages cleared. */
export interface RangePage {
  ranges: PageRange[];
  clears: PageRange[];
  /** Continuation marker; absent on the last page of the span. */
  next?: string;
  server?: string;
}

/** What a diff is taken against: an older snapshot of the same blob, or (managed disks) an older snapshot's SAS URL. */
export type DiffBase = { snapshot: string } | { previousUrl: Secret };

export interface ListOptions {
  marker?: string;
  /** Ranges per page; Azure caps it at 10,000. */
  maxResults?: number;
  /**
   * A timeout is final for this call (the retry wrapper does not repeat it): the caller answers a
   * timed-out listing of a large span by splitting the span instead (lib/diff/lister.ts).
   */
  splitOnTimeout?: boolean;
}

/** Conditions on a write: the fence (sequence number) the writer holds. */
export interface WriteConditions {
  fence?: number;
}

export interface SnapshotInfo {
  snapshot: string;
  metadata: Record<string, string>;
}

export interface Block {
  id: string;
  size: number;
}

export interface PageStore {
  /** Properties of a blob or snapshot; undefined when it does not exist. */
  properties(a: PageAddress): Promise<BlobProperties | undefined>;
  /** Creates the container of `location` if it is missing. */
  ensureContainer(location: BlobLocation): Promise<void>;
  /**
   * Creates (or, without `ifNotExists`, replaces) an empty page blob of `size` bytes. With
   * `ifNotExists` an existing blob is left alone and a StorageError 409 BlobAlreadyExists thrown.
   */
  create(
    a: PageAddress,
    size: number,
    options?: { ifNotExists?: boolean; metadata?: Record<string, string> },
  ): Promise<void>;
  resize(a: PageAddress, size: number): Promise<void>;
  setSequenceNumber(a: BlobAddress, value: number): Promise<void>;
  /** Deletes a blob with its snapshots, or (address with snapshot) one snapshot; false when it was not there. */
  delete(a: BlobAddress): Promise<boolean>;
  /** Takes a snapshot carrying `metadata`; returns its id. */
  snapshot(a: BlobAddress, metadata: Record<string, string>): Promise<string>;
  /** The snapshots of one blob (not of others sharing its name as a prefix), with their metadata. */
  listSnapshots(location: BlobLocation): Promise<SnapshotInfo[]>;
  /** One page of the valid ranges of `span`. */
  listRanges(a: PageAddress, span: PageRange, options?: ListOptions): Promise<RangePage>;
  /** One page of the pages written (ranges) and cleared (clears) in `span` since `base`. */
  listDiff(a: PageAddress, span: PageRange, base: DiffBase, options?: ListOptions): Promise<RangePage>;
  /**
   * Exactly the bytes of `range` (at most 4 MiB); zeros where no page is written. With `pooled`,
   * the caller promises to hand the buffer back with `release` (stores that pool bodies may then
   * lend memory they reuse); without it, the buffer is the caller's for good.
   */
  read(a: PageAddress, range: PageRange, options?: { pooled?: boolean }): Promise<Buffer>;
  /**
   * Hands back a buffer a `pooled` read returned, once the caller holds no reference to it and no
   * request of its is in flight: its memory serves a later read. Optional; a buffer never released
   * is simply collected.
   */
  release?(data: Buffer): void;
  /** Writes `data` (at most 4 MiB, 512-aligned) at `offset` with a transactional MD5. */
  write(a: PageAddress, offset: number, data: Buffer, conditions?: WriteConditions): Promise<void>;
  /**
   * Server-side copy of `length` bytes from `source` at the same offset (Put Page From URL): no
   * byte passes through this process. Endpoints without it (Azurite) throw a 501 StorageError.
   */
  writeFrom(
    a: PageAddress,
    offset: number,
    source: PageAddress,
    length: number,
    conditions?: WriteConditions,
  ): Promise<void>;
  /** Clears pages (a clear may span any length). */
  clear(a: PageAddress, range: PageRange, conditions?: WriteConditions): Promise<void>;

  /** Block blobs, for digests: stage, commit with metadata, list committed blocks, read a range, delete (via `delete`). */
  putBlock(location: BlobLocation, id: string, data: Buffer): Promise<void>;
  commitBlocks(location: BlobLocation, ids: string[], metadata: Record<string, string>): Promise<void>;
  /** Committed blocks in order and the blob's metadata; undefined when the blob does not exist. */
  blocks(location: BlobLocation): Promise<{ blocks: Block[]; metadata: Record<string, string> } | undefined>;
  readBlob(location: BlobLocation, offset: number, count: number): Promise<Buffer>;
}
