/**
 * The storage port's contract (lib/storage/port.ts), as one suite every implementation runs:
 * the Azure store on Azurite, the Azure store through the diff fixture (which answers page-range
 * diffs as Azure does), and the memory store. What an implementation cannot do here is declared
 * (`serverSideCopy`, `trustworthyDiffs`) and then checked to fail the way the engine expects
 * (501, or Azurite naming itself), so the memory store cannot drift from the real one unnoticed.
 */
import crypto from "node:crypto";
import { isRetryable } from "../../lib/core/retry";
import { isAlreadyExists, isFenced, isNotImplemented, StorageError } from "../../lib/storage/errors";
import type { BlobAddress, PageStore } from "../../lib/storage/port";
import { blobLocation, type AccountLocation, type BlobLocation } from "../../lib/storage/urls";
import { normalize, type PageRange } from "../../lib/ranges";

const KiB = 1024;
const MiB = 1024 * KiB;

export interface StorageUnderTest {
  store: PageStore;
  /** An account the store can reach, with a fresh container for this suite. */
  account: AccountLocation;
  container: string;
  /** Put Page From URL works (Azure, memory); else it must answer 501. */
  serverSideCopy: boolean;
  /** Diffs are right (Azure, memory); else the endpoint must name itself Azurite. */
  trustworthyDiffs: boolean;
}

async function allRanges(
  store: PageStore,
  a: BlobAddress,
  span: PageRange,
  maxResults?: number,
): Promise<PageRange[]> {
  const out: PageRange[] = [];
  let marker: string | undefined;
  do {
    const page = await store.listRanges(a, span, { marker, maxResults });
    out.push(...page.ranges);
    marker = page.next;
  } while (marker);
  return normalize(out);
}

async function allDiff(
  store: PageStore,
  a: BlobAddress,
  span: PageRange,
  base: string,
): Promise<{ writes: PageRange[]; clears: PageRange[]; server?: string }> {
  const writes: PageRange[] = [];
  const clears: PageRange[] = [];
  let marker: string | undefined;
  let server: string | undefined;
  do {
    const page = await store.listDiff(a, span, { snapshot: base }, { marker });
    writes.push(...page.ranges);
    clears.push(...page.clears);
    server ??= page.server;
    marker = page.next;
  } while (marker);
  return { writes: normalize(writes), clears: normalize(clears), server };
}

export function storageContract(
  name: string,
  open: () => Promise<StorageUnderTest>,
  close: () => Promise<void> = async () => undefined,
): void {
  describe(`storage port contract: ${name}`, () => {
    let t: StorageUnderTest;
    let n = 0;
    const fresh = (): BlobAddress => ({
      kind: "blob",
      location: blobLocation(t.account, t.container, `b${++n}-${crypto.randomBytes(3).toString("hex")}`),
    });
    const loc = (a: BlobAddress): BlobLocation => a.location;

    beforeAll(async () => {
      t = await open();
      await t.store.ensureContainer(blobLocation(t.account, t.container, "x"));
    });
    afterAll(close);

    test("a missing blob has no properties; create makes an empty page blob of the size, sequence number 0", async () => {
      const a = fresh();
      expect(await t.store.properties(a)).toBeUndefined();
      await t.store.create(a, 8 * MiB, { metadata: { diskdeltarestoreas: "x" } });
      const p = (await t.store.properties(a))!;
      expect(p).toMatchObject({ size: 8 * MiB, blobType: "PageBlob", sequenceNumber: 0, leased: false });
      expect(p.metadata.diskdeltarestoreas).toBe("x");
      expect(await allRanges(t.store, a, { start: 0, end: 8 * MiB })).toEqual([]);
    });

    test("create with ifNotExists refuses an existing blob and leaves it alone", async () => {
      const a = fresh();
      await t.store.create(a, MiB);
      await t.store.write(a, 0, Buffer.alloc(512, 7));
      const err = await t.store.create(a, 2 * MiB, { ifNotExists: true }).catch((e: unknown) => e);
      expect(isAlreadyExists(err)).toBe(true);
      expect((await t.store.properties(a))!.size).toBe(MiB);
      expect((await t.store.read(a, { start: 0, end: 512 }))[0]).toBe(7);
    });

    test("write then read returns the bytes; unwritten pages read as zeros; a read over 4 MiB is refused", async () => {
      const a = fresh();
      await t.store.create(a, 16 * MiB);
      const data = crypto.randomBytes(64 * KiB);
      await t.store.write(a, 4 * MiB + 512, data);
      expect(
        (await t.store.read(a, { start: 4 * MiB + 512, end: 4 * MiB + 512 + 64 * KiB })).equals(data),
      ).toBe(true);
      const around = await t.store.read(a, { start: 4 * MiB, end: 4 * MiB + 1024 });
      expect(around.subarray(0, 512).equals(Buffer.alloc(512))).toBe(true);
      expect(around.subarray(512).equals(data.subarray(0, 512))).toBe(true);
      await expect(t.store.read(a, { start: 0, end: 4 * MiB + 512 })).rejects.toThrow(/more than 4 MiB/);
    });

    test("valid ranges: normalized, clipped to the span asked for, complete over pages", async () => {
      const a = fresh();
      await t.store.create(a, 32 * MiB);
      const ranges: PageRange[] = [];
      for (let i = 0; i < 40; i++) {
        const start = i * 256 * KiB + (i % 3) * 512;
        await t.store.write(a, start, crypto.randomBytes(4 * KiB));
        ranges.push({ start, end: start + 4 * KiB });
      }
      expect(await allRanges(t.store, a, { start: 0, end: 32 * MiB }, 7)).toEqual(normalize(ranges));
      const clipped = await allRanges(t.store, a, {
        start: ranges[3].start + 1024,
        end: ranges[5].start + 2048,
      });
      expect(clipped).toEqual([
        { start: ranges[3].start + 1024, end: ranges[3].end },
        ranges[4],
        { start: ranges[5].start, end: ranges[5].start + 2048 },
      ]);
    });

    test("clear removes pages from the valid ranges and they read as zeros", async () => {
      const a = fresh();
      await t.store.create(a, 8 * MiB);
      await t.store.write(a, 0, crypto.randomBytes(MiB));
      await t.store.clear(a, { start: 256 * KiB, end: 512 * KiB });
      expect(await allRanges(t.store, a, { start: 0, end: 8 * MiB })).toEqual([
        { start: 0, end: 256 * KiB },
        { start: 512 * KiB, end: MiB },
      ]);
      expect(
        (await t.store.read(a, { start: 256 * KiB, end: 512 * KiB })).equals(Buffer.alloc(256 * KiB)),
      ).toBe(true);
    });

    test("a snapshot keeps its bytes and metadata while the blob changes; snapshots are listed with their metadata", async () => {
      const a = fresh();
      await t.store.create(a, 4 * MiB);
      const before = crypto.randomBytes(8 * KiB);
      await t.store.write(a, 0, before);
      const snapshot = await t.store.snapshot(a, { diskdeltadisk: "d1", diskdeltarun: "r1" });
      await t.store.write(a, 0, crypto.randomBytes(8 * KiB));
      await t.store.clear(a, { start: 4 * KiB, end: 8 * KiB });
      const snap: BlobAddress = { ...a, snapshot };
      expect((await t.store.read(snap, { start: 0, end: 8 * KiB })).equals(before)).toBe(true);
      expect(await allRanges(t.store, snap, { start: 0, end: 4 * MiB })).toEqual([
        { start: 0, end: 8 * KiB },
      ]);
      const listed = await t.store.listSnapshots(loc(a));
      expect(listed).toEqual([{ snapshot, metadata: { diskdeltadisk: "d1", diskdeltarun: "r1" } }]);
      expect((await t.store.properties(snap))!.size).toBe(4 * MiB);
    });

    test("snapshots of one blob are not listed for another blob whose name starts the same", async () => {
      const a = fresh();
      const longer: BlobAddress = {
        kind: "blob",
        location: blobLocation(t.account, t.container, `${a.location.blob}-2`),
      };
      await t.store.create(a, MiB);
      await t.store.create(longer, MiB);
      await t.store.snapshot(longer, {});
      expect(await t.store.listSnapshots(loc(a))).toEqual([]);
    });

    test("the diff between two snapshots names pages written and pages cleared, or the endpoint says it is Azurite", async () => {
      const a = fresh();
      await t.store.create(a, 8 * MiB);
      await t.store.write(a, 0, crypto.randomBytes(MiB));
      const base = await t.store.snapshot(a, {});
      await t.store.write(a, 2 * MiB, crypto.randomBytes(64 * KiB));
      await t.store.clear(a, { start: 0, end: 128 * KiB });
      const now = await t.store.snapshot(a, {});
      const diff = await allDiff(t.store, { ...a, snapshot: now }, { start: 0, end: 8 * MiB }, base);
      if (!t.trustworthyDiffs) {
        expect(diff.server).toMatch(/azurite/i);
        return;
      }
      expect(diff.server ?? "").not.toMatch(/azurite/i);
      expect(diff.writes).toEqual([{ start: 2 * MiB, end: 2 * MiB + 64 * KiB }]);
      expect(diff.clears).toEqual([{ start: 0, end: 128 * KiB }]);
    });

    test("the fence: a write that names a stale sequence number is refused and writes nothing", async () => {
      const a = fresh();
      await t.store.create(a, MiB);
      await t.store.setSequenceNumber(a, 1000);
      expect((await t.store.properties(a))!.sequenceNumber).toBe(1000);
      const err = await t.store.write(a, 0, Buffer.alloc(512, 1), { fence: 999 }).catch((e: unknown) => e);
      expect(isFenced(err)).toBe(true);
      expect(err).toBeInstanceOf(StorageError);
      expect(
        isFenced(await t.store.clear(a, { start: 0, end: 512 }, { fence: 5 }).catch((e: unknown) => e)),
      ).toBe(true);
      expect(await allRanges(t.store, a, { start: 0, end: MiB })).toEqual([]);
      await t.store.write(a, 0, Buffer.alloc(512, 1), { fence: 1000 });
      expect((await t.store.read(a, { start: 0, end: 512 }))[0]).toBe(1);
    });

    test("resize grows with empty pages and shrinks dropping what lies beyond", async () => {
      const a = fresh();
      await t.store.create(a, 2 * MiB);
      await t.store.write(a, MiB, crypto.randomBytes(MiB));
      await t.store.resize(a, 4 * MiB);
      expect((await t.store.properties(a))!.size).toBe(4 * MiB);
      expect(await allRanges(t.store, a, { start: 0, end: 4 * MiB })).toEqual([{ start: MiB, end: 2 * MiB }]);
      await t.store.resize(a, MiB + 4 * KiB);
      expect(await allRanges(t.store, a, { start: 0, end: MiB + 4 * KiB })).toEqual([
        { start: MiB, end: MiB + 4 * KiB },
      ]);
    });

    test("delete: a snapshot alone, then the blob with its snapshots; deleting again says false", async () => {
      const a = fresh();
      await t.store.create(a, MiB);
      const s1 = await t.store.snapshot(a, {});
      const s2 = await t.store.snapshot(a, {});
      expect(await t.store.delete({ ...a, snapshot: s1 })).toBe(true);
      expect((await t.store.listSnapshots(loc(a))).map((s) => s.snapshot)).toEqual([s2]);
      expect(await t.store.delete(a)).toBe(true);
      expect(await t.store.properties(a)).toBeUndefined();
      expect(await t.store.properties({ ...a, snapshot: s2 })).toBeUndefined();
      expect(await t.store.delete(a)).toBe(false);
      expect(await t.store.delete({ ...a, snapshot: s1 })).toBe(false);
    });

    test("server-side copy from a snapshot writes its bytes, or the endpoint answers 501", async () => {
      const src = fresh();
      const dst = fresh();
      await t.store.create(src, MiB);
      const data = crypto.randomBytes(128 * KiB);
      await t.store.write(src, 64 * KiB, data);
      const snapshot = await t.store.snapshot(src, {});
      await t.store.create(dst, MiB);
      const done = await t.store.writeFrom(dst, 64 * KiB, { ...src, snapshot }, 128 * KiB).then(
        () => undefined,
        (e: unknown) => e,
      );
      if (!t.serverSideCopy) {
        expect(isNotImplemented(done)).toBe(true);
        return;
      }
      expect(done).toBeUndefined();
      expect((await t.store.read(dst, { start: 64 * KiB, end: 192 * KiB })).equals(data)).toBe(true);
    });

    test("block blobs: staged blocks are committed in order with metadata, read by range, and gone after delete", async () => {
      const a = fresh();
      expect(await t.store.blocks(loc(a))).toBeUndefined();
      const parts = [crypto.randomBytes(1000), crypto.randomBytes(10), crypto.randomBytes(333)];
      const ids = parts.map((_, i) => Buffer.from(`block-${i}`).toString("base64"));
      for (const [i, p] of parts.entries()) await t.store.putBlock(loc(a), ids[i], p);
      await t.store.commitBlocks(loc(a), ids, { diskdeltapoint: "p1" });
      const found = (await t.store.blocks(loc(a)))!;
      expect(found.blocks).toEqual(ids.map((id, i) => ({ id, size: parts[i].length })));
      expect(found.metadata.diskdeltapoint).toBe("p1");
      expect((await t.store.readBlob(loc(a), 1000, 10)).equals(parts[1])).toBe(true);
      expect(await t.store.delete(a)).toBe(true);
      expect(await t.store.blocks(loc(a))).toBeUndefined();
    });

    test("failures are StorageErrors naming the operation and the blob, judged like the services' errors", async () => {
      const a = fresh();
      const err = (await t.store.write(a, 0, Buffer.alloc(512)).catch((e: unknown) => e)) as StorageError;
      expect(err).toBeInstanceOf(StorageError);
      expect(err.statusCode).toBe(404);
      expect(err.message).toContain(a.location.blob);
      expect(err.message).toMatch(/^write /);
      expect(isRetryable(err)).toBe(false);
    });
  });
}
