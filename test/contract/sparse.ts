/**
 * Sparse images for the managed-disk tests: a blob's valid ranges and only their bytes, so a
 * 1 GiB disk with a few MiB of data costs a few MiB to compare; and what a minimal diff between
 * two images is (pages valid in the newer one whose bytes differ or that were not valid before;
 * pages valid before and not now), the oracle for what an incremental run must write and clear.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { fromInclusive, normalize, type PageRange } from "../../lib/ranges";

const PAGE = 512;
const PIECE = 4 * 1024 * 1024;

export interface SparseImage {
  size: number;
  valid: PageRange[];
  /** The bytes of each valid range, in order. */
  data: Buffer[];
}

export async function sparseImage(client: PageBlobClient): Promise<SparseImage> {
  const size = (await client.getProperties()).contentLength ?? 0;
  const listed: PageRange[] = [];
  for await (const page of client.listPageRanges(0, size).byPage())
    for (const r of page.pageRange ?? []) listed.push(fromInclusive(r));
  const valid = normalize(listed);
  const data: Buffer[] = [];
  for (const r of valid) {
    const parts: Buffer[] = [];
    for (let at = r.start; at < r.end; at += PIECE) {
      const count = Math.min(PIECE, r.end - at);
      parts.push(await client.downloadToBuffer(at, count));
    }
    data.push(Buffer.concat(parts));
  }
  return { size, valid, data };
}

/** The page at `offset` if valid in `image`, else undefined. */
function pageAt(image: SparseImage, offset: number): Buffer | undefined {
  let lo = 0;
  let hi = image.valid.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = image.valid[mid];
    if (offset < r.start) hi = mid - 1;
    else if (offset >= r.end) lo = mid + 1;
    else return image.data[mid].subarray(offset - r.start, offset - r.start + PAGE);
  }
  return undefined;
}

export function expectSameSparse(actual: SparseImage, expected: SparseImage, what: string): void {
  if (actual.size !== expected.size) throw new Error(`${what}: size ${actual.size} != ${expected.size}`);
  const a = JSON.stringify(actual.valid);
  const e = JSON.stringify(expected.valid);
  if (a !== e) throw new Error(`${what}: valid ranges differ:\n  got      ${a}\n  expected ${e}`);
  actual.data.forEach((d, i) => {
    if (!d.equals(expected.data[i]))
      throw new Error(
        `${what}: bytes differ in valid range [${actual.valid[i].start}, ${actual.valid[i].end})`,
      );
  });
}

/** The minimal change from `before` to `after`: pages to write and pages to clear. */
export function minimalDiff(
  before: SparseImage,
  after: SparseImage,
): { writes: PageRange[]; clears: PageRange[] } {
  const writes: PageRange[] = [];
  after.valid.forEach((r, i) => {
    for (let at = r.start; at < r.end; at += PAGE) {
      const old = at < before.size ? pageAt(before, at) : undefined;
      const now = after.data[i].subarray(at - r.start, at - r.start + PAGE);
      if (!old || !old.equals(now)) writes.push({ start: at, end: at + PAGE });
    }
  });
  const clears: PageRange[] = [];
  before.valid.forEach((r) => {
    for (let at = r.start; at < Math.min(r.end, after.size); at += PAGE)
      if (!pageAt(after, at)) clears.push({ start: at, end: at + PAGE });
  });
  return { writes: normalize(writes), clears: normalize(clears) };
}
