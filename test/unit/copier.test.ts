/**
 * The chunk copier over the memory store (held to the storage contract): chunks whose ranges run
 * on across a window boundary are copied by one request, the bytes arrive exactly, and whether the
 * endpoint copies server-side is learnt once per store, not once per copier.
 */
import crypto from "node:crypto";
import { FaultPlan, underPlan } from "../../lib/core/faults";
import { ChunkCopier, joinChunks, requestsOf } from "../../lib/copy/copier";
import { chunksOf, WINDOW_SIZE, type PageRange } from "../../lib/ranges";
import { StorageError } from "../../lib/storage/errors";
import { MemoryStore } from "../../lib/storage/memory";
import { blobAt, type PageStore } from "../../lib/storage/port";
import { blobLocation, parseAccountUrl } from "../../lib/storage/urls";

const MiB = 1024 * 1024;
const account = parseAccountUrl("https://copiertest.blob.core.windows.net");
const source = blobAt(blobLocation(account, "disks", "source"));
const target = blobAt(blobLocation(account, "backups", "target"));

async function world(size: number, written: PageRange[]) {
  const store = new MemoryStore();
  await store.ensureContainer(source.location);
  await store.ensureContainer(target.location);
  await store.create(source, size);
  await store.create(target, size);
  for (const r of written) {
    for (let at = r.start; at < r.end; at += WINDOW_SIZE) {
      const end = Math.min(r.end, at + WINDOW_SIZE);
      await store.write(source, at, crypto.randomBytes(end - at));
    }
  }
  return store;
}

function counting(store: PageStore) {
  const plan = new FaultPlan();
  const ops = (name: string) => plan.names.filter((n) => n === `storage.${name}`).length;
  return { store: underPlan<PageStore>(store, plan, "storage"), plan, ops };
}

async function sameBytes(store: PageStore, size: number): Promise<void> {
  for (let at = 0; at < size; at += WINDOW_SIZE) {
    const range = { start: at, end: Math.min(size, at + WINDOW_SIZE) };
    expect((await store.read(target, range)).equals(await store.read(source, range))).toBe(true);
  }
}

describe("joinChunks", () => {
  test("a range crossing a window boundary is one request when it fits 4 MiB", () => {
    const ranges = [{ start: 3 * MiB, end: 5 * MiB }];
    const groups = joinChunks(chunksOf(ranges));
    expect(groups.map((g) => g.map((c) => c.index))).toEqual([[0, 1]]);
    expect(requestsOf(groups[0])).toEqual(ranges);
  });

  test("a range longer than 4 MiB stays split at the window", () => {
    const groups = joinChunks(chunksOf([{ start: 2 * MiB, end: 7 * MiB }]));
    expect(groups.map((g) => g.map((c) => c.index))).toEqual([[0], [1]]);
  });

  test("windows that only touch a boundary from one side are not joined", () => {
    const groups = joinChunks(
      chunksOf([
        { start: 3 * MiB, end: 4 * MiB },
        { start: 4 * MiB + 4096, end: 5 * MiB },
      ]),
    );
    expect(groups).toHaveLength(2);
  });

  test("a chain of joins stops at four windows, and every request fits 4 MiB", () => {
    // 1 MiB either side of every boundary: each boundary joins, the chain would be endless.
    const ranges: PageRange[] = [];
    for (let w = 0; w < 10; w++) ranges.push({ start: w * 4 * MiB + 3 * MiB, end: w * 4 * MiB + 5 * MiB });
    const groups = joinChunks(chunksOf(ranges));
    expect(Math.max(...groups.map((g) => g.length))).toBeLessThanOrEqual(4);
    expect(groups.flat().map((c) => c.index)).toEqual([...Array(11).keys()]);
    for (const g of groups)
      for (const r of requestsOf(g)) expect(r.end - r.start).toBeLessThanOrEqual(WINDOW_SIZE);
    expect(groups.flatMap(requestsOf)).toEqual(groups.flatMap(requestsOf).sort((a, b) => a.start - b.start));
  });
});

describe("ChunkCopier", () => {
  test("copies joined groups byte for byte with one read and one write per joined range", async () => {
    const size = 64 * MiB;
    const written = [
      { start: 3 * MiB + 512, end: 5 * MiB },
      { start: 9 * MiB, end: 10 * MiB },
      { start: 15 * MiB, end: 21 * MiB },
    ];
    const base = await world(size, written);
    const { store, ops } = counting(base);
    const copier = new ChunkCopier(store, source, target, "streamed");
    let bytes = 0;
    for (const group of joinChunks(chunksOf(written))) bytes += await copier.copyChunks(group);
    expect(bytes).toBe(2 * MiB - 512 + MiB + 6 * MiB);
    // [3 MiB+512, 5 MiB) joined; [9, 10) alone; [15, 21) as [15,16) [16,20) [20,21): 5 reads.
    expect(ops("read")).toBe(5);
    expect(ops("write")).toBe(5);
    await sameBytes(base, size);
  });

  test("auto mode learns once per store that the endpoint has no server-side copy", async () => {
    const size = 64 * MiB;
    const written = Array.from({ length: 12 }, (_, i) => ({ start: i * 4 * MiB, end: i * 4 * MiB + MiB }));
    const base = await world(size, written);
    const { store, plan, ops } = counting(base);
    plan.add({
      at: (name) => name === "storage.writeFrom",
      fail: () => new StorageError("copy", "target", 501, "NotImplemented", "no Put Page From URL"),
      times: Infinity,
    });
    const chunks = [...chunksOf(written)];
    // Three copiers (a worker makes one per message), each copying four chunks at once.
    await Promise.all(
      [0, 1, 2].map((k) => {
        const copier = new ChunkCopier(store, source, target, "auto");
        return Promise.all(chunks.slice(k * 4, k * 4 + 4).map((c) => copier.copyChunk(c)));
      }),
    );
    expect(ops("writeFrom")).toBe(1);
    expect(ops("write")).toBe(12);
    await sameBytes(base, size);
    // A copier made later on the same store does not ask again.
    const later = new ChunkCopier(store, source, target, "auto");
    await later.copyChunk(chunks[0]);
    expect(ops("writeFrom")).toBe(1);
    expect(later.path).toBe("streamed");
  });

  test("a probe that fails for another reason fails its chunk only; the next copy asks again", async () => {
    const size = 16 * MiB;
    const written = [
      { start: 0, end: MiB },
      { start: 4 * MiB, end: 5 * MiB },
    ];
    const base = await world(size, written);
    const { store, plan, ops } = counting(base);
    plan.add({
      at: (name) => name === "storage.writeFrom",
      fail: () => new StorageError("copy", "target", 403, "AuthorizationFailure", "not allowed"),
    });
    const chunks = [...chunksOf(written)];
    const copier = new ChunkCopier(store, source, target, "auto");
    const results = await Promise.allSettled(chunks.map((c) => copier.copyChunk(c)));
    expect(results.map((r) => r.status)).toEqual(["rejected", "fulfilled"]);
    // The second chunk waited for the failed probe, then copied server-side itself.
    expect(ops("writeFrom")).toBe(2);
    expect(ops("write")).toBe(0);
    expect(copier.path).toBe("server");
  });
});
