/**
 * The storage port in memory, for simulations: every operation is a function of the state it
 * finds (no clock, no I/O, no timers), so a run over it is deterministic and can be replayed and
 * cut at any operation. It answers as Azure does, not as Azurite does: page-range diffs are right
 * (pages written or cleared since the base, minimal by content), Put Page From URL works, the
 * sequence-number fence is enforced, and it names itself `diskdelta-memory` in `server`.
 *
 * Pages live in 64 KiB cells; a cell is never changed in place (a write makes a new one), so a
 * snapshot is a copy of the cell map and shares every untouched cell with the blob.
 */
import crypto from "node:crypto";
import { PAGE_SIZE, WINDOW_SIZE, type PageRange } from "../ranges";
import { StorageError } from "./errors";
import {
  describeAddress,
  type BlobAddress,
  type Block,
  type BlobProperties,
  type DiffBase,
  type ListOptions,
  type PageAddress,
  type PageStore,
  type RangePage,
  type SnapshotInfo,
  type WriteConditions,
} from "./port";
import type { BlobLocation } from "./urls";

export const MEMORY_SERVER = "diskdelta-memory";

const CELL = 64 * 1024;
const PAGES_PER_CELL = CELL / PAGE_SIZE;
const MAX_RESULTS = 10_000;

interface Cell {
  data: Buffer;
  /** 1 per written page, 0 per empty one. */
  valid: Uint8Array;
}

interface Version {
  size: number;
  cells: Map<number, Cell>;
  metadata: Record<string, string>;
}

interface Blob {
  type: "PageBlob" | "BlockBlob";
  live: Version;
  snapshots: Map<string, Version>;
  sequenceNumber: number;
  leased: boolean;
  staged: Map<string, Buffer>;
  committed: Array<{ id: string; data: Buffer }>;
}

function key(loc: BlobLocation): string {
  return `${loc.serviceUrl}/${loc.container}/${loc.blob}`;
}

function fail(op: string, target: string, status: number, code: string, detail = ""): never {
  throw new StorageError(op, target, status, code, detail);
}

export class MemoryStore implements PageStore {
  private readonly containers = new Set<string>();
  private readonly blobs = new Map<string, Blob>();
  private readonly sas = new Map<string, BlobAddress>();
  private snapshotCounter = 0;

  /**
   * An independent copy of everything stored (cells are never changed in place, so they are
   * shared): a simulation sets a world up once and replays a scenario from a copy of it.
   */
  clone(): MemoryStore {
    const copy = new MemoryStore();
    for (const c of this.containers) copy.containers.add(c);
    for (const [k, b] of this.blobs) {
      copy.blobs.set(k, {
        ...b,
        live: { ...b.live, cells: new Map(b.live.cells), metadata: { ...b.live.metadata } },
        snapshots: new Map(
          [...b.snapshots].map(([id, v]) => [
            id,
            { ...v, cells: new Map(v.cells), metadata: { ...v.metadata } },
          ]),
        ),
        staged: new Map(b.staged),
        committed: [...b.committed],
      });
    }
    for (const [k, v] of this.sas) copy.sas.set(k, v);
    copy.snapshotCounter = this.snapshotCounter;
    return copy;
  }

  /** Routes a SAS URL to a blob or snapshot (what a managed disk's beginGetAccess hands out). */
  routeSas(url: string, to: BlobAddress): void {
    this.sas.set(url, to);
  }

  revokeSas(url: string): void {
    this.sas.delete(url);
  }

  private resolve(a: PageAddress, op: string): BlobAddress {
    if (a.kind === "blob") return a;
    const to = this.sas.get(a.url.reveal());
    if (!to)
      fail(op, a.label, 403, "AuthenticationFailed", "the SAS is not valid (revoked or never granted)");
    return to;
  }

  private blob(a: BlobAddress, op: string): Blob {
    const b = this.blobs.get(key(a.location));
    if (!b) fail(op, describeAddress(a), 404, "BlobNotFound");
    return b;
  }

  private version(a: PageAddress, op: string): { blob: Blob; v: Version; at: BlobAddress } {
    const at = this.resolve(a, op);
    const blob = this.blob(at, op);
    if (!at.snapshot) return { blob, v: blob.live, at };
    const v = blob.snapshots.get(at.snapshot);
    if (!v) fail(op, describeAddress(a), 404, "BlobNotFound", "no such snapshot");
    return { blob, v, at };
  }

  private writable(
    a: PageAddress,
    op: string,
    conditions?: WriteConditions,
  ): { blob: Blob; at: BlobAddress } {
    const { blob, at } = this.version(a, op);
    if (at.snapshot) fail(op, describeAddress(a), 400, "OperationNotAllowedOnSnapshot");
    if (conditions?.fence !== undefined && blob.sequenceNumber !== conditions.fence) {
      fail(op, describeAddress(a), 412, "SequenceNumberConditionNotMet");
    }
    return { blob, at };
  }

  /** Every blob and snapshot this store holds, for tests that look for leaks. */
  inventory(): Array<{ url: string; snapshots: string[]; metadata: Record<string, string> }> {
    return [...this.blobs.entries()].map(([url, b]) => ({
      url,
      snapshots: [...b.snapshots.keys()],
      metadata: b.live.metadata,
    }));
  }

  async properties(a: PageAddress): Promise<BlobProperties | undefined> {
    const at = this.resolve(a, "get properties of");
    const b = this.blobs.get(key(at.location));
    if (!b) return undefined;
    const v = at.snapshot ? b.snapshots.get(at.snapshot) : b.live;
    if (!v) return undefined;
    return {
      size: v.size,
      blobType: b.type,
      sequenceNumber: b.sequenceNumber,
      metadata: { ...v.metadata },
      leased: b.leased,
      server: MEMORY_SERVER,
    };
  }

  /** Takes or releases a lease, as a VM holding the blob as its disk would. */
  setLeased(location: BlobLocation, leased: boolean): void {
    const b = this.blobs.get(key(location));
    if (b) b.leased = leased;
  }

  async ensureContainer(location: BlobLocation): Promise<void> {
    this.containers.add(`${location.serviceUrl}/${location.container}`);
  }

  private requireContainer(location: BlobLocation, op: string): void {
    if (!this.containers.has(`${location.serviceUrl}/${location.container}`))
      fail(op, location.url, 404, "ContainerNotFound");
  }

  async create(
    a: PageAddress,
    size: number,
    options: { ifNotExists?: boolean; metadata?: Record<string, string> } = {},
  ): Promise<void> {
    const at = this.resolve(a, "create");
    this.requireContainer(at.location, "create");
    if (size % PAGE_SIZE !== 0)
      fail("create", describeAddress(a), 400, "InvalidHeaderValue", "size is not a multiple of 512");
    const existing = this.blobs.get(key(at.location));
    if (existing && options.ifNotExists) fail("create", describeAddress(a), 409, "BlobAlreadyExists");
    if (existing?.leased) fail("create", describeAddress(a), 412, "LeaseIdMissing");
    this.blobs.set(key(at.location), {
      type: "PageBlob",
      live: { size, cells: new Map(), metadata: { ...(options.metadata ?? {}) } },
      snapshots: existing?.snapshots ?? new Map(),
      sequenceNumber: 0,
      leased: false,
      staged: new Map(),
      committed: [],
    });
  }

  async resize(a: PageAddress, size: number): Promise<void> {
    const { blob } = this.writable(a, "resize");
    const v = blob.live;
    const cells = new Map(v.cells);
    for (const [index, cell] of v.cells) {
      const start = index * CELL;
      if (start >= size) cells.delete(index);
      else if (start + CELL > size) cells.set(index, this.cut(cell, (size - start) / PAGE_SIZE));
    }
    blob.live = { ...v, size, cells };
  }

  /** A copy of `cell` with pages from `fromPage` on cleared. */
  private cut(cell: Cell, fromPage: number): Cell {
    const data = Buffer.from(cell.data);
    const valid = Uint8Array.from(cell.valid);
    data.fill(0, fromPage * PAGE_SIZE);
    valid.fill(0, fromPage);
    return { data, valid };
  }

  async setSequenceNumber(a: BlobAddress, value: number): Promise<void> {
    const { blob } = this.writable(a, "set the sequence number of");
    blob.sequenceNumber = value;
  }

  async delete(a: BlobAddress): Promise<boolean> {
    const b = this.blobs.get(key(a.location));
    if (!b) return false;
    if (a.snapshot) return b.snapshots.delete(a.snapshot);
    if (b.leased) fail("delete", describeAddress(a), 412, "LeaseIdMissing");
    this.blobs.delete(key(a.location));
    return true;
  }

  private nextSnapshotId(): string {
    // Azure's form (seven decimals), strictly increasing within this store.
    const n = ++this.snapshotCounter;
    const base = new Date(Date.UTC(2026, 0, 1) + n * 1000).toISOString().replace(/\.\d{3}Z$/, "");
    return `${base}.${String(n % 10_000_000).padStart(7, "0")}Z`;
  }

  async snapshot(a: BlobAddress, metadata: Record<string, string>): Promise<string> {
    const { blob } = this.writable(a, "snapshot");
    const id = this.nextSnapshotId();
    blob.snapshots.set(id, {
      size: blob.live.size,
      cells: new Map(blob.live.cells),
      metadata: { ...metadata },
    });
    return id;
  }

  async listSnapshots(location: BlobLocation): Promise<SnapshotInfo[]> {
    this.requireContainer(location, "list the snapshots of");
    const b = this.blobs.get(key(location));
    if (!b) return [];
    return [...b.snapshots.entries()].map(([snapshot, v]) => ({ snapshot, metadata: { ...v.metadata } }));
  }

  private pageValid(v: Version, page: number): boolean {
    const cell = v.cells.get(Math.floor(page / PAGES_PER_CELL));
    return cell !== undefined && cell.valid[page % PAGES_PER_CELL] === 1;
  }

  private pageEquals(a: Version, b: Version, page: number): boolean {
    const ci = Math.floor(page / PAGES_PER_CELL);
    const x = a.cells.get(ci);
    const y = b.cells.get(ci);
    if (x === y) return true;
    const p = page % PAGES_PER_CELL;
    const va = x?.valid[p] === 1;
    const vb = y?.valid[p] === 1;
    if (va !== vb) return false;
    if (!va) return true;
    return (
      x!.data.compare(y!.data, p * PAGE_SIZE, (p + 1) * PAGE_SIZE, p * PAGE_SIZE, (p + 1) * PAGE_SIZE) === 0
    );
  }

  /** Pages of `span` (clipped to the blob) for which `pick` holds, as ranges, from `fromOffset` on. */
  private scan(
    v: Version,
    span: PageRange,
    pick: (page: number) => boolean,
    cellsOf: Array<Map<number, Cell>>,
  ): PageRange[] {
    const end = Math.min(span.end, v.size);
    const out: PageRange[] = [];
    // Only cells present in some version can hold a page that matters: walk those, in order.
    const indices = new Set<number>();
    for (const cells of cellsOf) for (const i of cells.keys()) indices.add(i);
    for (const ci of [...indices].sort((x, y) => x - y)) {
      const cellStart = ci * CELL;
      if (cellStart + CELL <= span.start || cellStart >= end) continue;
      for (let p = 0; p < PAGES_PER_CELL; p++) {
        const start = cellStart + p * PAGE_SIZE;
        if (start < span.start || start >= end) continue;
        if (!pick(start / PAGE_SIZE)) continue;
        const last = out[out.length - 1];
        if (last && last.end === start) last.end = start + PAGE_SIZE;
        else out.push({ start, end: start + PAGE_SIZE });
      }
    }
    return out;
  }

  private paginate(ranges: PageRange[], clears: PageRange[], options: ListOptions): RangePage {
    const from = options.marker ? Number(options.marker) : 0;
    const max = Math.min(options.maxResults ?? MAX_RESULTS, MAX_RESULTS);
    const items = [...ranges.map((r) => ({ r, clear: false })), ...clears.map((r) => ({ r, clear: true }))]
      .filter((i) => i.r.start >= from)
      .sort((x, y) => x.r.start - y.r.start);
    const page = items.slice(0, max);
    const rest = items.length > max;
    return {
      ranges: page.filter((i) => !i.clear).map((i) => i.r),
      clears: page.filter((i) => i.clear).map((i) => i.r),
      next: rest ? String(items[max].r.start) : undefined,
      server: MEMORY_SERVER,
    };
  }

  async listRanges(a: PageAddress, span: PageRange, options: ListOptions = {}): Promise<RangePage> {
    const { v } = this.version(a, "list the page ranges of");
    const ranges = this.scan(v, span, (p) => this.pageValid(v, p), [v.cells]);
    return this.paginate(ranges, [], options);
  }

  async listDiff(
    a: PageAddress,
    span: PageRange,
    base: DiffBase,
    options: ListOptions = {},
  ): Promise<RangePage> {
    const op = "list the page-range diff of";
    const { blob, v, at } = this.version(a, op);
    let older: Version | undefined;
    if ("snapshot" in base) {
      older = blob.snapshots.get(base.snapshot);
      if (!older) fail(op, describeAddress(a), 409, "PreviousSnapshotNotFound");
    } else {
      const prev = this.sas.get(base.previousUrl.reveal());
      if (!prev) fail(op, describeAddress(a), 409, "PreviousSnapshotNotFound");
      if (key(prev.location) !== key(at.location) || !prev.snapshot) {
        fail(
          op,
          describeAddress(a),
          409,
          "PreviousSnapshotOperationNotSupported",
          "the previous snapshot is not of the same disk",
        );
      }
      older = blob.snapshots.get(prev.snapshot);
      if (!older) fail(op, describeAddress(a), 409, "PreviousSnapshotNotFound");
    }
    if (at.snapshot && "snapshot" in base && base.snapshot > at.snapshot)
      fail(op, describeAddress(a), 400, "PreviousSnapshotCannotBeNewer");
    const o = older;
    const writes = this.scan(v, span, (p) => this.pageValid(v, p) && !this.pageEquals(v, o, p), [
      v.cells,
      o.cells,
    ]);
    const clears = this.scan(
      { ...v, size: Math.max(v.size, o.size) },
      span,
      (p) => this.pageValid(o, p) && !this.pageValid(v, p) && p * PAGE_SIZE < v.size,
      [o.cells],
    );
    return this.paginate(writes, clears, options);
  }

  async read(a: PageAddress, range: PageRange): Promise<Buffer> {
    const { v } = this.version(a, "read");
    if (range.end - range.start > WINDOW_SIZE) throw new Error("read of more than 4 MiB");
    if (range.end > v.size) fail("read", describeAddress(a), 416, "InvalidRange");
    const out = Buffer.alloc(range.end - range.start);
    for (let at = range.start; at < range.end;) {
      const ci = Math.floor(at / CELL);
      const cellEnd = Math.min((ci + 1) * CELL, range.end);
      const cell = v.cells.get(ci);
      if (cell) cell.data.copy(out, at - range.start, at - ci * CELL, cellEnd - ci * CELL);
      at = cellEnd;
    }
    return out;
  }

  /** Applies `data` (or a clear, when undefined) to [offset, offset + length) of the live version. */
  private apply(blob: Blob, offset: number, length: number, data: Buffer | undefined): void {
    const cells = new Map(blob.live.cells);
    for (let at = offset; at < offset + length;) {
      const ci = Math.floor(at / CELL);
      const cellStart = ci * CELL;
      const end = Math.min(cellStart + CELL, offset + length);
      const old = cells.get(ci);
      const cell: Cell = old
        ? { data: Buffer.from(old.data), valid: Uint8Array.from(old.valid) }
        : { data: Buffer.alloc(CELL), valid: new Uint8Array(PAGES_PER_CELL) };
      if (data) data.copy(cell.data, at - cellStart, at - offset, end - offset);
      else cell.data.fill(0, at - cellStart, end - cellStart);
      cell.valid.fill(data ? 1 : 0, (at - cellStart) / PAGE_SIZE, (end - cellStart) / PAGE_SIZE);
      if (cell.valid.some((x) => x === 1)) cells.set(ci, cell);
      else cells.delete(ci);
      at = end;
    }
    blob.live = { ...blob.live, cells };
  }

  private checkRange(
    op: string,
    a: PageAddress,
    blob: Blob,
    offset: number,
    length: number,
    max?: number,
  ): void {
    if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0 || length <= 0)
      fail(op, describeAddress(a), 400, "InvalidPageRange", "not 512-aligned");
    if (max !== undefined && length > max) fail(op, describeAddress(a), 413, "RequestBodyTooLarge");
    if (offset + length > blob.live.size)
      fail(op, describeAddress(a), 416, "InvalidPageRange", "beyond the end of the blob");
  }

  async write(a: PageAddress, offset: number, data: Buffer, conditions?: WriteConditions): Promise<void> {
    const { blob } = this.writable(a, "write", conditions);
    this.checkRange("write", a, blob, offset, data.length, WINDOW_SIZE);
    this.apply(blob, offset, data.length, Buffer.from(data));
  }

  async writeFrom(
    a: PageAddress,
    offset: number,
    source: PageAddress,
    length: number,
    conditions?: WriteConditions,
  ): Promise<void> {
    const { blob } = this.writable(a, "copy into", conditions);
    this.checkRange("copy into", a, blob, offset, length, WINDOW_SIZE);
    // Put Page From URL copies the bytes only: empty source pages arrive as written zeros, as on Azure.
    const data = await this.read(source, { start: offset, end: offset + length });
    this.apply(blob, offset, length, data);
  }

  async clear(a: PageAddress, range: PageRange, conditions?: WriteConditions): Promise<void> {
    const { blob } = this.writable(a, "clear", conditions);
    this.checkRange("clear", a, blob, range.start, range.end - range.start);
    this.apply(blob, range.start, range.end - range.start, undefined);
  }

  private blockBlob(location: BlobLocation, create: boolean): Blob | undefined {
    let b = this.blobs.get(key(location));
    if (!b && create) {
      this.requireContainer(location, "stage a block of");
      b = {
        type: "BlockBlob",
        live: { size: 0, cells: new Map(), metadata: {} },
        snapshots: new Map(),
        sequenceNumber: 0,
        leased: false,
        staged: new Map(),
        committed: [],
      };
      this.blobs.set(key(location), b);
    }
    return b;
  }

  async putBlock(location: BlobLocation, id: string, data: Buffer): Promise<void> {
    this.blockBlob(location, true)!.staged.set(id, Buffer.from(data));
  }

  async commitBlocks(location: BlobLocation, ids: string[], metadata: Record<string, string>): Promise<void> {
    const b = this.blockBlob(location, true)!;
    const committed = ids.map((id) => {
      const data = b.staged.get(id) ?? b.committed.find((c) => c.id === id)?.data;
      if (!data)
        fail("commit the blocks of", location.url, 400, "InvalidBlockList", `block ${id} was never staged`);
      return { id, data };
    });
    b.committed = committed;
    b.staged.clear();
    b.live = {
      size: committed.reduce((n, c) => n + c.data.length, 0),
      cells: new Map(),
      metadata: { ...metadata },
    };
  }

  async blocks(
    location: BlobLocation,
  ): Promise<{ blocks: Block[]; metadata: Record<string, string> } | undefined> {
    const b = this.blobs.get(key(location));
    if (!b || b.type !== "BlockBlob" || b.committed.length === 0) return undefined;
    return {
      blocks: b.committed.map((c) => ({ id: c.id, size: c.data.length })),
      metadata: { ...b.live.metadata },
    };
  }

  async readBlob(location: BlobLocation, offset: number, count: number): Promise<Buffer> {
    const b = this.blobs.get(key(location));
    if (!b || b.type !== "BlockBlob") fail("read", location.url, 404, "BlobNotFound");
    const all = Buffer.concat(b.committed.map((c) => c.data));
    if (offset + count > all.length) fail("read", location.url, 416, "InvalidRange");
    return Buffer.from(all.subarray(offset, offset + count));
  }

  /** For tests: flips one byte of a snapshot (bit rot at rest), keeping its page valid. */
  rot(location: BlobLocation, snapshot: string, offset: number): void {
    const b = this.blobs.get(key(location));
    const v = b?.snapshots.get(snapshot);
    const ci = Math.floor(offset / CELL);
    const cell = v?.cells.get(ci);
    if (!v || !cell) throw new Error(`no data at ${offset} of ${location.url} snapshot ${snapshot}`);
    const data = Buffer.from(cell.data);
    data[offset - ci * CELL] ^= 0xff;
    v.cells.set(ci, { data, valid: cell.valid });
  }
}

/** A random 64-byte key, for memory accounts that want one. */
export function randomKey(): string {
  return crypto.randomBytes(64).toString("base64");
}
