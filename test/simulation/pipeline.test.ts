/**
 * The run as a pipeline (issue 8), proven over the memory store (held to the storage contract) on
 * the layouts that matter: a large disk, mostly empty, its data scattered.
 *
 * - The lister: every range exactly once and in order, in few calls on an empty region (spans
 *   grow), back to the base span on a fragmented one, a timed-out large span split rather than
 *   repeated, paged listings continued by their markers, and never more than `lookahead` calls
 *   in flight or ahead of a consumer that stops reading.
 * - The run: byte-identical restore points on dense and scattered layouts; a listing page or a
 *   chunk that fails once mid-pipeline (retried), a chunk that fails for good (the run fails, the
 *   next one finishes without a second full copy), and kills at seeded random instants of a
 *   scattered first and incremental backup (resumed, nothing skipped, no full copy).
 */
import { backupDisk } from "../../lib/backup/run";
import { FaultPlan, transientError } from "../../lib/core/faults";
import { addDisk } from "../../lib/disks/register";
import { listChanges, type ListerOptions, type ListSpec } from "../../lib/diff/lister";
import { backupLocation } from "../../lib/lineage/locations";
import { normalize, type PageRange } from "../../lib/ranges";
import { StorageError } from "../../lib/storage/errors";
import { MemoryStore } from "../../lib/storage/memory";
import type { BlobAddress, PageStore, RangePage } from "../../lib/storage/port";
import { countingWrites, image, MiB, pattern, sameImage, World } from "./world";

const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

/** A deterministic generator (xorshift), so a failure replays with its seed. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** `count` extents of `length` bytes, one at a random page of each equal slice of `size`. */
function scattered(size: number, count: number, length: number, seed: number): PageRange[] {
  const pick = rng(seed);
  const slice = Math.floor(size / count / 512) * 512;
  const out: PageRange[] = [];
  for (let i = 0; i < count; i++) {
    const start = i * slice + pick((slice - length) / 512) * 512;
    out.push({ start, end: start + length });
  }
  return out;
}

async function writeExtents(store: PageStore, a: BlobAddress, extents: PageRange[], seed: number) {
  for (const e of extents)
    for (let at = e.start; at < e.end; at += 4 * MiB)
      await store.write(a, at, pattern(seed + at / 512, Math.min(4 * MiB, e.end - at)));
}

async function blobWith(size: number, extents: PageRange[]) {
  const store = new MemoryStore();
  const a: BlobAddress = {
    kind: "blob",
    location: new World().blob("source", "vhds", "big.vhd"),
  };
  await store.ensureContainer(a.location);
  await store.create(a, size);
  await writeExtents(store, a, extents, 1);
  return { store, a };
}

/** The store with every listing call recorded (its span), and how many are in flight. */
function watched(store: PageStore, options: { delayMs?: number; timeoutAbove?: number } = {}) {
  const calls: PageRange[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const list =
    (inner: (...args: never[]) => Promise<RangePage>) =>
    async (a: unknown, span: PageRange, ...rest: unknown[]): Promise<RangePage> => {
      calls.push(span);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
        if (options.timeoutAbove !== undefined && span.end - span.start > options.timeoutAbove) {
          throw new StorageError("list the page ranges of", "big.vhd", 408, "OperationTimedOut", "too big");
        }
        return await (inner as (...args: unknown[]) => Promise<RangePage>)(a, span, ...rest);
      } finally {
        inFlight--;
      }
    };
  const wrapped: PageStore = Object.create(store) as PageStore;
  wrapped.listRanges = list(store.listRanges.bind(store));
  wrapped.listDiff = list(store.listDiff.bind(store));
  return { store: wrapped, calls, maxInFlight: () => maxInFlight };
}

async function collect(store: PageStore, spec: ListSpec, size: number, options: ListerOptions) {
  const writes: PageRange[] = [];
  let covered = 0;
  for await (const piece of listChanges(store, spec, 0, size, options)) {
    // Pieces are contiguous, in order, and cover the whole disk.
    expect(piece.start).toBe(covered);
    expect(piece.end).toBeGreaterThan(piece.start);
    covered = piece.end;
    writes.push(...piece.writes);
  }
  expect(covered).toBe(size);
  return normalize(writes);
}

const OPTIONS: ListerOptions = { baseSpan: 128 * MiB, lookahead: 4 };

describe("the lister", () => {
  test("a 1 TiB disk with 256 scattered extents: every range once, in a few dozen calls instead of 8,192", async () => {
    const extents = scattered(TiB, 256, 64 * 1024, 11);
    const { store, a } = await blobWith(TiB, extents);
    const w = watched(store);
    const listed = await collect(w.store, { kind: "valid", address: a }, TiB, OPTIONS);
    expect(listed).toEqual(normalize(extents));
    expect(w.calls.length).toBeLessThanOrEqual(40);
    expect(w.maxInFlight()).toBeLessThanOrEqual(OPTIONS.lookahead);
  });

  test("a fragmented region brings the span back to the base; the sparse rest grows it again", async () => {
    // 64 GiB, empty but for a 16 MiB region at 40 GiB where every other page is written (16,384 ranges).
    const size = 64 * GiB;
    const dense: PageRange[] = [];
    for (let p = 0; p < (16 * MiB) / 1024; p++)
      dense.push({ start: 40 * GiB + p * 1024, end: 40 * GiB + p * 1024 + 512 });
    const { store, a } = await blobWith(size, []);
    for (const r of dense) await store.write(a, r.start, pattern(r.start, 512));
    const w = watched(store);
    const listed = await collect(w.store, { kind: "valid", address: a }, size, { ...OPTIONS, lookahead: 1 });
    expect(listed).toEqual(dense);
    const spans = w.calls.map((c) => c.end - c.start);
    // Growing over the empty start, at least doubling from the base.
    expect(spans[1]).toBe(2 * spans[0]);
    // The first call after the dense listing's last page is smaller than the span that found it.
    const denseCall = w.calls.findIndex((c) => c.start <= 40 * GiB && c.end > 40 * GiB);
    const after = w.calls.findIndex((c, i) => i > denseCall && c.start >= w.calls[denseCall].end);
    expect(spans[after]).toBeLessThan(spans[denseCall]);
  });

  test("a large span that times out is split, not repeated, down to spans the service answers", async () => {
    const extents = scattered(TiB, 64, 64 * 1024, 12);
    const { store, a } = await blobWith(TiB, extents);
    const w = watched(store, { timeoutAbove: 32 * GiB });
    const listed = await collect(w.store, { kind: "valid", address: a }, TiB, OPTIONS);
    expect(listed).toEqual(normalize(extents));
    // No span was asked for twice.
    const asked = w.calls.map((c) => `${c.start}-${c.end}`);
    expect(new Set(asked).size).toBe(asked.length);
    expect(w.calls.some((c) => c.end - c.start > 32 * GiB)).toBe(true);
  });

  test("a timeout at the base span is an error the caller sees (the retry policy retries it)", async () => {
    const { store, a } = await blobWith(GiB, scattered(GiB, 4, MiB, 13));
    const w = watched(store, { timeoutAbove: 0 });
    await expect(collect(w.store, { kind: "valid", address: a }, GiB, OPTIONS)).rejects.toThrow(
      /OperationTimedOut/,
    );
  });

  test("paged listings are continued by their markers: many pages of one span, each its own piece", async () => {
    const extents = scattered(8 * GiB, 300, 64 * 1024, 14);
    const { store, a } = await blobWith(8 * GiB, extents);
    const w = watched(store);
    const listed = await collect(w.store, { kind: "valid", address: a }, 8 * GiB, {
      ...OPTIONS,
      pageSize: 7,
    });
    expect(listed).toEqual(normalize(extents));
    expect(w.calls.length).toBeGreaterThanOrEqual(300 / 7);
  });

  test("a diff lists exactly the pages written and cleared since the base", async () => {
    const size = 256 * GiB;
    const before = scattered(size, 40, MiB, 15);
    const { store, a } = await blobWith(size, before);
    const base = await store.snapshot(a, {});
    const written = scattered(size, 25, 256 * 1024, 16);
    await writeExtents(store, a, written, 99);
    const cleared = before.slice(0, 5).map((e) => ({ start: e.start, end: e.start + 128 * 1024 }));
    for (const c of cleared) await store.clear(a, c);
    const now = await store.snapshot(a, {});
    const w = watched(store);
    const writes: PageRange[] = [];
    const clears: PageRange[] = [];
    for await (const piece of listChanges(
      w.store,
      { kind: "diff", address: { ...a, snapshot: now }, base: { snapshot: base } },
      0,
      size,
      OPTIONS,
    )) {
      writes.push(...piece.writes);
      clears.push(...piece.clears);
    }
    expect(normalize(writes)).toEqual(normalize(written));
    expect(normalize(clears)).toEqual(normalize(cleared));
  });

  test("never more than `lookahead` calls ahead of a consumer that stops reading", async () => {
    const { store, a } = await blobWith(TiB, scattered(TiB, 256, 64 * 1024, 17));
    const w = watched(store, { delayMs: 2 });
    const lister = listChanges(w.store, { kind: "valid", address: a }, 0, TiB, OPTIONS);
    await lister.next();
    await new Promise((r) => setTimeout(r, 100));
    // The first span is consumed; at most `lookahead` spans are listed (or held) beyond it,
    // each at most PAGES_AHEAD pages: the memory held does not grow with the disk.
    expect(w.calls.length).toBeLessThanOrEqual(OPTIONS.lookahead + 2);
    const before = w.calls.length;
    await new Promise((r) => setTimeout(r, 50));
    expect(w.calls.length).toBe(before);
    await lister.return(undefined);
    expect(w.maxInFlight()).toBeLessThanOrEqual(OPTIONS.lookahead);
  });
});

// ---------------------------------------------------------------------------------------------
// The run

const DISK = "wide";

async function disk(world: World, size: number, extents: PageRange[]): Promise<BlobAddress> {
  const src: BlobAddress = { kind: "blob", location: world.blob("source", "vhds", "wide.vhd") };
  await world.store.ensureContainer(src.location);
  await world.store.create(src, size);
  await writeExtents(world.store, src, extents, 3);
  await addDisk(world.process(), {
    id: DISK,
    source: src.location.url,
    backupAccount: "https://simbackup.blob.core.windows.net",
  });
  return src;
}

async function pointMatchesSource(world: World, runId: string): Promise<string | undefined> {
  const run = (await world.lineage.getRun(DISK, runId))!;
  const d = (await world.lineage.getDisk(DISK))!;
  const point = (await world.lineage.getPoint(DISK, run.restorePoint!))!;
  const src: BlobAddress = {
    kind: "blob",
    location: world.blob("source", "vhds", "wide.vhd"),
    snapshot: run.sourceSnapshot,
  };
  const bak: BlobAddress = { kind: "blob", location: backupLocation(d), snapshot: point.backupSnapshot };
  return sameImage(await image(world.store, bak), await image(world.store, src));
}

/** 256 GiB with 48 extents of 1 MiB at random pages (a quarter of them cross a window boundary). */
const WIDE = { size: 256 * GiB, extents: scattered(256 * GiB, 48, MiB, 21) };
const WIDE_ENV = { DISKDELTA_SEGMENT_BYTES: String(128 * MiB), DISKDELTA_COPY_CONCURRENCY: "8" };

describe("the run", () => {
  test("dense and scattered layouts: restore points byte-identical, bytes written = bytes that hold data", async () => {
    for (const layout of [{ size: 64 * MiB, extents: scattered(64 * MiB, 12, 3 * MiB + 512, 22) }, WIDE]) {
      const world = new World(WIDE_ENV);
      await disk(world, layout.size, layout.extents);
      const run = await backupDisk(world.process(), DISK, { trigger: "cli" });
      expect(run.state).toBe("succeeded");
      expect(run.bytesCopied).toBe(layout.extents.length * (layout.extents[0].end - layout.extents[0].start));
      expect(await pointMatchesSource(world, run.id)).toBeUndefined();
    }
  });

  test("a listing page and a chunk that fail once mid-pipeline are retried; the point is exact", async () => {
    const world = new World(WIDE_ENV);
    await disk(world, WIDE.size, WIDE.extents);
    let listings = 0;
    let copies = 0;
    // A listing past the first lookahead's worth, and a copy in the middle (copy mode auto: the
    // memory store copies server-side, as Azure does).
    const plan = new FaultPlan()
      .add({ at: (name) => name === "storage.listRanges" && ++listings === 4, fail: transientError })
      .add({ at: (name) => name === "storage.writeFrom" && ++copies === 20, fail: transientError });
    const run = await backupDisk(world.process(plan), DISK, { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    // Both faults fired (a rule stops counting once it has).
    expect([listings, copies]).toEqual([4, 20]);
    expect(plan.names.filter((n) => n === "storage.writeFrom").length).toBe(WIDE.extents.length + 1);
    expect(await pointMatchesSource(world, run.id)).toBeUndefined();
  });

  test("a chunk that fails for good fails the run; the next run finishes without a second full copy", async () => {
    const world = new World(WIDE_ENV);
    await disk(world, WIDE.size, WIDE.extents);
    let copies = 0;
    const refused = () =>
      new StorageError("write", "wide", 403, "AuthorizationPermissionMismatch", "not allowed");
    const plan = new FaultPlan().add({
      at: (name) => name === "storage.writeFrom" && ++copies === 30,
      fail: refused,
    });
    await expect(backupDisk(world.process(plan), DISK, { trigger: "cli" })).rejects.toThrow(
      /AuthorizationPermissionMismatch/,
    );
    const failed = (await world.lineage.listRuns(DISK))[0];
    expect(failed.state).toBe("failed");
    const d = (await world.lineage.getDisk(DISK))!;
    const next = countingWrites(world.process(), backupLocation(d).url);
    const run = await backupDisk(next.app, DISK, { trigger: "cli" });
    expect(run.state).toBe("succeeded");
    const total = WIDE.extents.length * MiB;
    // What the failed run wrote stays: the next run writes only what is missing.
    expect(next.written()).toBeLessThan(total);
    expect(next.written()).toBeGreaterThan(0);
    expect(await pointMatchesSource(world, run.id)).toBeUndefined();
  });

  test("kills at seeded random instants of a scattered first and incremental backup: resumed, exact, no full copy", async () => {
    const tried: string[] = [];
    for (const phase of ["first", "incremental"] as const) {
      const start = new World(WIDE_ENV);
      const src = await disk(start, WIDE.size, WIDE.extents);
      let changed = 0;
      if (phase === "incremental") {
        const base = await backupDisk(start.process(), DISK, { trigger: "cli" });
        expect(base.state).toBe("succeeded");
        const written = scattered(WIDE.size, 20, 512 * 1024, 23);
        await writeExtents(start.store, src, written, 77);
        changed = written.length * 512 * 1024;
      } else changed = WIDE.extents.length * MiB;
      // How many operations a run takes, uninterrupted.
      const counter = new FaultPlan();
      await backupDisk(start.clone().process(counter), DISK, { trigger: "cli" });
      const pick = rng(phase === "first" ? 31 : 32);
      for (let i = 0; i < 6; i++) {
        const k = 1 + pick(counter.count);
        const world = start.clone();
        const plan = new FaultPlan().add({ at: k, crash: true });
        // A kill in the after-seal work (digests, retention) leaves a sealed run: the hook's
        // failures never fail a run, so the call returns it.
        const ended = await backupDisk(world.process(plan), DISK, { trigger: "cli" }).catch(() => undefined);
        expect(plan.crashed).toBe(true);
        world.advance(10 * 60_000);
        const d = (await world.lineage.getDisk(DISK))!;
        const resumed = countingWrites(world.process(), backupLocation(d).url);
        const run =
          ended?.state === "succeeded" ? ended : await backupDisk(resumed.app, DISK, { trigger: "cli" });
        const what = `${phase}, killed after operation ${k} of ${counter.count} (${counter.names[k - 1]})`;
        tried.push(what);
        expect([what, run.state]).toEqual([what, "succeeded"]);
        expect([what, await pointMatchesSource(world, run.id)]).toEqual([what, undefined]);
        expect([what, resumed.written() <= changed]).toEqual([what, true]);
      }
    }
    process.stdout.write(`pipeline kills: ${tried.length} random instants tried, 0 failures\n`);
  });
});
