/**
 * WrittenWindows, the MD5s of what a run wrote: a window answers only when its valid ranges are
 * exactly the one part written there, with the MD5 of those bytes; a window written twice, read
 * with other ranges, or past the limit answers nothing (it is read back). Driven through the real
 * copier over the memory store, so the parts are the requests the copier really makes.
 */
import crypto from "node:crypto";
import { ChunkCopier, joinChunks } from "../../lib/copy/copier";
import { WrittenWindows } from "../../lib/digests/written";
import { chunksOf, WINDOW_SIZE, type PageRange } from "../../lib/ranges";
import { MemoryStore } from "../../lib/storage/memory";
import { blobAt } from "../../lib/storage/port";
import { blobLocation, parseAccountUrl } from "../../lib/storage/urls";

const MiB = 1024 * 1024;
const account = parseAccountUrl("https://writtentest.blob.core.windows.net");
const source = blobAt(blobLocation(account, "disks", "source"));
const target = blobAt(blobLocation(account, "backups", "target"));
const md5 = (b: Buffer) => crypto.createHash("md5").update(b).digest();

async function copied(size: number, ranges: PageRange[], limit?: number) {
  const store = new MemoryStore();
  await store.ensureContainer(source.location);
  await store.ensureContainer(target.location);
  await store.create(source, size);
  await store.create(target, size);
  for (const r of ranges) await store.write(source, r.start, crypto.randomBytes(r.end - r.start));
  const written = new WrittenWindows(limit);
  const copier = new ChunkCopier(store, source, target, "streamed", undefined, written);
  for (const group of joinChunks(chunksOf(ranges, size))) await copier.copyChunks(group);
  const bytes = (r: PageRange) => store.read(target, r);
  return { store, written, copier, bytes };
}

test("one part per window: its MD5, for exactly its range; a piece across a boundary is a part in each window", async () => {
  const whole = { start: 0, end: WINDOW_SIZE };
  const across = { start: 7 * MiB, end: 9 * MiB };
  const { written, bytes } = await copied(16 * MiB, [whole, across]);
  expect(written.digestOf(0, [whole])).toEqual(md5(await bytes(whole)));
  const left = { start: 7 * MiB, end: 8 * MiB };
  const right = { start: 8 * MiB, end: 9 * MiB };
  expect(written.digestOf(1, [left])).toEqual(md5(await bytes(left)));
  expect(written.digestOf(2, [right])).toEqual(md5(await bytes(right)));
  // Other valid ranges than the part (data there before, or more than was written): no answer.
  expect(written.digestOf(0, [{ start: 0, end: 2 * MiB }])).toBeUndefined();
  expect(written.digestOf(1, [{ start: 4 * MiB, end: 5 * MiB }, left])).toBeUndefined();
  expect(written.digestOf(3, [{ start: 12 * MiB, end: 13 * MiB }])).toBeUndefined();
});

test("a window written in two parts, or twice, answers nothing", async () => {
  const a = { start: 0, end: 512 * 4 };
  const b = { start: MiB, end: MiB + 512 };
  const { written, copier } = await copied(8 * MiB, [a, b]);
  expect(written.digestOf(0, [a])).toBeUndefined();
  expect(written.digestOf(0, [a, b])).toBeUndefined();
  const c = { start: 5 * MiB, end: 6 * MiB };
  await copier.writeFrom(crypto.randomBytes(MiB), c.start, [c]);
  expect(written.digestOf(1, [c])).toBeDefined();
  // The same range again (a retried chunk): still one range, but no single write is known to be its content.
  await copier.writeFrom(crypto.randomBytes(MiB), c.start, [c]);
  expect(written.digestOf(1, [c])).toBeUndefined();
});

test("past the limit windows are not kept, so they are read back", async () => {
  const ranges = [0, 1, 2].map((i) => ({ start: i * WINDOW_SIZE, end: i * WINDOW_SIZE + MiB }));
  const { written } = await copied(12 * MiB, ranges, 2);
  expect(written.digestOf(0, [ranges[0]])).toBeDefined();
  expect(written.digestOf(1, [ranges[1]])).toBeDefined();
  expect(written.digestOf(2, [ranges[2]])).toBeUndefined();
});
