/**
 * Property tests of lib/ranges against a deliberately naive model: a set of page indices over a small
 * address space, so overlap, adjacency and window boundaries are hit on almost every run. The model converts
 * a page set back to ranges with its own loop, so a normalized answer can be compared exactly (a page set has
 * one and only one normalized form).
 */
import fc from "fast-check";
import {
  PAGE_SIZE,
  WINDOW_SIZE,
  PageRange,
  assertAligned,
  chunksOf,
  clip,
  differingPages,
  fromInclusive,
  intersect,
  normalize,
  segments,
  subtract,
  toInclusive,
  totalBytes,
  union,
} from "../../lib/ranges";

/** Small on purpose: 64 pages make random ranges overlap and touch often. */
const MODEL_PAGES = 64;

// ---------------------------------------------------------------- model

function pagesOf(ranges: Iterable<PageRange>): Set<number> {
  const pages = new Set<number>();
  for (const r of ranges) {
    for (let p = r.start / PAGE_SIZE; p < r.end / PAGE_SIZE; p++) pages.add(p);
  }
  return pages;
}

function rangesOfPages(pages: Iterable<number>): PageRange[] {
  const sorted = [...pages].sort((x, y) => x - y);
  const out: PageRange[] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && last.end === p * PAGE_SIZE) last.end += PAGE_SIZE;
    else out.push({ start: p * PAGE_SIZE, end: (p + 1) * PAGE_SIZE });
  }
  return out;
}

function expectNormalized(ranges: PageRange[]): void {
  ranges.forEach((r, i) => {
    expect(r.start % PAGE_SIZE).toBe(0);
    expect(r.end % PAGE_SIZE).toBe(0);
    expect(r.start).toBeGreaterThanOrEqual(0);
    expect(r.start).toBeLessThan(r.end);
    if (i > 0) expect(ranges[i - 1].end).toBeLessThan(r.start);
  });
}

// ---------------------------------------------------------------- arbitraries

/** Any aligned range inside the model space, empty ones included. */
const rangeArb = (maxPage = MODEL_PAGES): fc.Arbitrary<PageRange> =>
  fc
    .tuple(fc.integer({ min: 0, max: maxPage }), fc.integer({ min: 0, max: maxPage }))
    .map(([x, y]) => ({ start: Math.min(x, y) * PAGE_SIZE, end: Math.max(x, y) * PAGE_SIZE }));

/** Unsorted, overlapping, adjacent, duplicated and empty ranges: what a careless caller may pass. */
const messyArb = fc.array(rangeArb(), { maxLength: 12 });

/**
 * Sorted, disjoint ranges built from a page bitmap (not by the code under test), with some runs split into
 * adjacent pieces: chunksOf must accept and merge those.
 */
const sortedRangesArb = (pages: number): fc.Arbitrary<PageRange[]> =>
  fc
    .tuple(
      fc.array(fc.boolean(), { minLength: pages, maxLength: pages }),
      fc.array(fc.boolean(), { minLength: pages, maxLength: pages }),
    )
    .map(([valid, splitHere]) => {
      const out: PageRange[] = [];
      for (let p = 0; p < pages; p++) {
        if (!valid[p]) continue;
        const last = out[out.length - 1];
        if (last !== undefined && last.end === p * PAGE_SIZE && !splitHere[p]) last.end += PAGE_SIZE;
        else out.push({ start: p * PAGE_SIZE, end: (p + 1) * PAGE_SIZE });
      }
      return out;
    });

function* lazily<T>(items: T[], onPull: () => void): Generator<T> {
  for (const item of items) {
    onPull();
    yield item;
  }
}

// ---------------------------------------------------------------- set algebra

describe("normalize, union, subtract, intersect, clip agree with page-set semantics", () => {
  test("normalize yields the one normalized form of the input's pages", () => {
    fc.assert(
      fc.property(messyArb, (rs) => {
        const out = normalize(rs);
        expectNormalized(out);
        expect(out).toEqual(rangesOfPages(pagesOf(rs)));
        expect(normalize(out)).toEqual(out);
        expect(totalBytes(out)).toBe(pagesOf(rs).size * PAGE_SIZE);
      }),
    );
  });

  test("normalize does not alias or mutate its input", () => {
    fc.assert(
      fc.property(messyArb, (rs) => {
        const before = rs.map((r) => ({ ...r }));
        const out = normalize(rs);
        expect(rs).toEqual(before);
        for (const r of out) expect(rs).not.toContain(r);
      }),
    );
  });

  test("union is set union", () => {
    fc.assert(
      fc.property(messyArb, messyArb, (a, b) => {
        const out = union(a, b);
        expectNormalized(out);
        expect(out).toEqual(rangesOfPages(new Set([...pagesOf(a), ...pagesOf(b)])));
      }),
    );
  });

  test("subtract is set difference", () => {
    fc.assert(
      fc.property(messyArb, messyArb, (a, b) => {
        const out = subtract(a, b);
        const inB = pagesOf(b);
        expectNormalized(out);
        expect(out).toEqual(rangesOfPages([...pagesOf(a)].filter((p) => !inB.has(p))));
      }),
    );
  });

  test("intersect is set intersection", () => {
    fc.assert(
      fc.property(messyArb, messyArb, (a, b) => {
        const out = intersect(a, b);
        const inB = pagesOf(b);
        expectNormalized(out);
        expect(out).toEqual(rangesOfPages([...pagesOf(a)].filter((p) => inB.has(p))));
      }),
    );
  });

  test("clip keeps exactly the pages inside [start, end)", () => {
    fc.assert(
      fc.property(messyArb, rangeArb(), (rs, bounds) => {
        const out = clip(rs, bounds.start, bounds.end);
        const lo = bounds.start / PAGE_SIZE;
        const hi = bounds.end / PAGE_SIZE;
        expectNormalized(out);
        expect(out).toEqual(rangesOfPages([...pagesOf(rs)].filter((p) => p >= lo && p < hi)));
      }),
    );
  });

  test("every operation rejects a misaligned range, naming it", () => {
    const bad = { start: 512, end: 1000 };
    const good = [{ start: 0, end: 512 }];
    expect(() => normalize([bad])).toThrow("[512, 1000)");
    expect(() => union(good, [bad])).toThrow("[512, 1000)");
    expect(() => subtract(good, [bad])).toThrow("[512, 1000)");
    expect(() => intersect([bad], good)).toThrow("[512, 1000)");
    expect(() => clip([bad], 0, 4096)).toThrow("[512, 1000)");
    expect(() => clip(good, 0, 100)).toThrow("[0, 100)");
    expect(() => totalBytes([bad])).toThrow("[512, 1000)");
  });

  test("assertAligned accepts exactly the aligned, ordered, non-negative ranges", () => {
    const offset = fc.oneof(
      fc.integer({ min: -4, max: 8 }).map((n) => n * PAGE_SIZE),
      fc.integer({ min: -PAGE_SIZE, max: 4 * PAGE_SIZE }),
      fc.constantFrom(Number.NaN, Infinity, 0.5, 2 ** 60),
    );
    fc.assert(
      fc.property(offset, offset, (start, end) => {
        const ok =
          Number.isSafeInteger(start) &&
          Number.isSafeInteger(end) &&
          start >= 0 &&
          start % PAGE_SIZE === 0 &&
          end % PAGE_SIZE === 0 &&
          start <= end;
        if (ok) expect(() => assertAligned({ start, end })).not.toThrow();
        else expect(() => assertAligned({ start, end })).toThrow(`[${start}, ${end})`);
      }),
    );
  });

  test("examples: empty input, adjacent merge, a hole", () => {
    expect(normalize([])).toEqual([]);
    expect(union([], [])).toEqual([]);
    expect(subtract([], [{ start: 0, end: 512 }])).toEqual([]);
    expect(intersect([{ start: 0, end: 512 }], [])).toEqual([]);
    expect(totalBytes([])).toBe(0);
    expect(
      normalize([
        { start: 512, end: 1024 },
        { start: 0, end: 512 },
        { start: 2048, end: 2048 },
      ]),
    ).toEqual([{ start: 0, end: 1024 }]);
    expect(subtract([{ start: 0, end: 4096 }], [{ start: 1024, end: 2048 }])).toEqual([
      { start: 0, end: 1024 },
      { start: 2048, end: 4096 },
    ]);
    expect(intersect([{ start: 0, end: 1024 }], [{ start: 1024, end: 2048 }])).toEqual([]);
  });
});

// ---------------------------------------------------------------- inclusive form

describe("fromInclusive / toInclusive", () => {
  test("round-trip every non-empty aligned range", () => {
    fc.assert(
      fc.property(
        rangeArb(1 << 20).filter((r) => r.start < r.end),
        (r) => {
          const inclusive = toInclusive(r);
          expect(inclusive).toEqual({ start: r.start, end: r.end - 1 });
          expect(fromInclusive(inclusive)).toEqual(r);
        },
      ),
    );
  });

  test("fromInclusive accepts exactly start%512==0, (end+1)%512==0, end>=start", () => {
    const near = fc.oneof(
      fc
        .integer({ min: -2, max: 8 })
        .chain((n) => fc.integer({ min: -2, max: 1 }).map((d) => n * PAGE_SIZE + d)),
      fc.integer({ min: -1000, max: 5000 }),
    );
    fc.assert(
      fc.property(near, near, (start, end) => {
        const ok = start >= 0 && start % PAGE_SIZE === 0 && (end + 1) % PAGE_SIZE === 0 && end >= start;
        if (ok) expect(fromInclusive({ start, end })).toEqual({ start, end: end + 1 });
        else expect(() => fromInclusive({ start, end })).toThrow(`{start: ${start}, end: ${end}}`);
      }),
    );
  });

  test("examples", () => {
    expect(fromInclusive({ start: 0, end: 511 })).toEqual({ start: 0, end: 512 });
    expect(toInclusive({ start: 0, end: 512 })).toEqual({ start: 0, end: 511 });
    expect(() => fromInclusive({ start: 0, end: 512 })).toThrow(/end \+ 1/);
    expect(() => fromInclusive({ start: 1, end: 511 })).toThrow(/start/);
    expect(() => fromInclusive({ start: 1024, end: 511 })).toThrow(/before start/);
    expect(() => toInclusive({ start: 512, end: 512 })).toThrow(/empty/);
  });
});

// ---------------------------------------------------------------- chunks

describe("chunksOf", () => {
  /** Up to 64 windows of 1 to 8 pages each, passed explicitly. */
  const chunkCase = fc
    .tuple(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 64 }))
    .chain(([pagesPerWindow, windows]) =>
      sortedRangesArb(pagesPerWindow * windows).map((ranges) => ({
        windowSize: pagesPerWindow * PAGE_SIZE,
        ranges,
      })),
    );

  test("covers exactly the input pages, one ascending chunk per touched window, none crossing a window", () => {
    fc.assert(
      fc.property(chunkCase, ({ windowSize, ranges }) => {
        const chunks = [...chunksOf(ranges, windowSize)];
        const covered: PageRange[] = [];
        chunks.forEach((chunk, i) => {
          if (i > 0) expect(chunk.index).toBeGreaterThan(chunks[i - 1].index);
          expectNormalized(chunk.ranges);
          expect(chunk.ranges.length).toBeGreaterThan(0);
          for (const r of chunk.ranges) {
            expect(r.start).toBeGreaterThanOrEqual(chunk.index * windowSize);
            expect(r.end).toBeLessThanOrEqual((chunk.index + 1) * windowSize);
          }
          expect(chunk.bytes).toBe(totalBytes(chunk.ranges));
          expect(chunk.bytes).toBeLessThanOrEqual(windowSize);
          covered.push(...chunk.ranges);
        });
        expect(totalBytes(covered)).toBe(totalBytes(ranges));
        expect(rangesOfPages(pagesOf(covered))).toEqual(rangesOfPages(pagesOf(ranges)));
        const touched = new Set([...pagesOf(ranges)].map((p) => Math.floor((p * PAGE_SIZE) / windowSize)));
        expect(chunks.map((c) => c.index)).toEqual([...touched].sort((x, y) => x - y));
      }),
    );
  });

  test("pulls a lazy source no further than the window it is yielding, plus one range", () => {
    fc.assert(
      fc.property(chunkCase, ({ windowSize, ranges }) => {
        let pulled = 0;
        const source = lazily(ranges, () => pulled++);
        for (const chunk of chunksOf(source, windowSize)) {
          const windowEnd = (chunk.index + 1) * windowSize;
          const needed = ranges.filter((r) => r.start < windowEnd).length;
          expect(pulled).toBeLessThanOrEqual(needed + 1);
        }
        expect(pulled).toBe(ranges.length);
      }),
    );
  });

  test("works on an endless source (it never collects the whole input)", () => {
    function* everyOtherPage(): Generator<PageRange> {
      for (let start = 0; ; start += 2 * PAGE_SIZE) yield { start, end: start + PAGE_SIZE };
    }
    const windowSize = 8 * PAGE_SIZE;
    const first: number[] = [];
    for (const chunk of chunksOf(everyOtherPage(), windowSize)) {
      expect(chunk.bytes).toBe(4 * PAGE_SIZE);
      first.push(chunk.index);
      if (first.length === 3) break;
    }
    expect(first).toEqual([0, 1, 2]);
  });

  test("examples at window boundaries, default window", () => {
    const W = WINDOW_SIZE;
    expect([...chunksOf([])]).toEqual([]);
    expect([...chunksOf([{ start: W, end: 2 * W }])]).toEqual([
      { index: 1, ranges: [{ start: W, end: 2 * W }], bytes: W },
    ]);
    expect([...chunksOf([{ start: W - 512, end: W }])]).toEqual([
      { index: 0, ranges: [{ start: W - 512, end: W }], bytes: 512 },
    ]);
    expect([...chunksOf([{ start: W - 512, end: W + 1024 }])]).toEqual([
      { index: 0, ranges: [{ start: W - 512, end: W }], bytes: 512 },
      { index: 1, ranges: [{ start: W, end: W + 1024 }], bytes: 1024 },
    ]);
    expect([
      ...chunksOf([
        { start: 0, end: 512 },
        { start: 512, end: 1024 },
      ]),
    ]).toEqual([{ index: 0, ranges: [{ start: 0, end: 1024 }], bytes: 1024 }]);
  });

  test("a fully valid 1 TiB disk becomes 262,144 full windows", () => {
    let count = 0;
    let index = -1;
    // Plain checks: a quarter of a million expect() calls would dominate the run time.
    for (const chunk of chunksOf([{ start: 0, end: 2 ** 40 }])) {
      const r = chunk.ranges[0];
      const ok =
        chunk.index === index + 1 &&
        chunk.bytes === WINDOW_SIZE &&
        chunk.ranges.length === 1 &&
        r.start === chunk.index * WINDOW_SIZE &&
        r.end === r.start + WINDOW_SIZE;
      if (!ok) throw new Error(`unexpected chunk ${JSON.stringify(chunk)} after index ${index}`);
      index = chunk.index;
      count++;
    }
    expect(count).toBe(2 ** 40 / WINDOW_SIZE);
  });

  test("rejects unsorted or overlapping input and bad window sizes", () => {
    const run = (rs: PageRange[], w?: number) => () => [...chunksOf(rs, w)];
    expect(
      run([
        { start: 1024, end: 2048 },
        { start: 0, end: 512 },
      ]),
    ).toThrow(/sorted, disjoint/);
    expect(
      run([
        { start: 0, end: 2048 },
        { start: 1024, end: 4096 },
      ]),
    ).toThrow(/sorted, disjoint/);
    expect(run([], 0)).toThrow(/windowSize/);
    expect(run([], 1000)).toThrow(/windowSize/);
    expect(run([{ start: 0, end: 100 }])).toThrow("[0, 100)");
  });
});

// ---------------------------------------------------------------- differingPages

describe("differingPages", () => {
  /** Deterministic filler: fast-check shrinks the seed rather than megabytes of bytes. */
  function filled(length: number, seed: number): Uint8Array {
    const out = new Uint8Array(length);
    let x = seed | 1;
    for (let i = 0; i < length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
    return out;
  }

  function modelDiff(a: Uint8Array, b: Uint8Array, baseOffset: number): PageRange[] {
    const pages: number[] = [];
    for (let p = 0; p < a.length / PAGE_SIZE; p++) {
      for (let i = p * PAGE_SIZE; i < (p + 1) * PAGE_SIZE; i++) {
        if (a[i] !== b[i]) {
          pages.push(p + baseOffset / PAGE_SIZE);
          break;
        }
      }
    }
    return rangesOfPages(pages);
  }

  /** Up to 300 pages: more than two 64 KiB compare blocks, so block edges are crossed. */
  const diffCase = fc.record({
    pages: fc.integer({ min: 0, max: 300 }),
    seed: fc.integer(),
    edits: fc.array(fc.record({ at: fc.nat(), flip: fc.integer({ min: 1, max: 255 }) }), { maxLength: 20 }),
    basePage: fc.integer({ min: 0, max: 1 << 20 }),
    view: fc.constantFrom("buffer", "uint8array", "offset-view"),
  });

  test("matches a byte-by-byte model, for Buffers, Uint8Arrays and views at an offset", () => {
    fc.assert(
      fc.property(diffCase, ({ pages, seed, edits, basePage, view }) => {
        const length = pages * PAGE_SIZE;
        const a = filled(length, seed);
        const b = a.slice();
        for (const e of edits) if (length > 0) b[e.at % length] ^= e.flip;
        const wrap = (u: Uint8Array): Uint8Array => {
          if (view === "buffer") return Buffer.from(u);
          if (view === "uint8array") return u;
          const backing = new Uint8Array(length + 3);
          backing.set(u, 3);
          return backing.subarray(3, 3 + length);
        };
        const baseOffset = basePage * PAGE_SIZE;
        const out = differingPages(wrap(a), wrap(b), baseOffset);
        expectNormalized(out);
        expect(out).toEqual(modelDiff(a, b, baseOffset));
      }),
    );
  });

  test("examples: first and last byte of a page, equal input, bad arguments", () => {
    const a = new Uint8Array(4 * PAGE_SIZE);
    const b = a.slice();
    expect(differingPages(a, b, 0)).toEqual([]);
    b[PAGE_SIZE] = 1; // first byte of page 1
    b[3 * PAGE_SIZE - 1] = 1; // last byte of page 2
    expect(differingPages(a, b, 1024)).toEqual([{ start: 1024 + PAGE_SIZE, end: 1024 + 3 * PAGE_SIZE }]);
    expect(() => differingPages(a, new Uint8Array(PAGE_SIZE), 0)).toThrow(/equal length/);
    expect(() => differingPages(new Uint8Array(100), new Uint8Array(100), 0)).toThrow(/multiple/);
    expect(() => differingPages(a, b, 100)).toThrow(/baseOffset/);
  });
});

// ---------------------------------------------------------------- segments

describe("segments", () => {
  test("cover [0, size) exactly with full segments and a shorter last one", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2000 }),
        fc.integer({ min: 1, max: 300 }),
        (pages, perSegment) => {
          const size = pages * PAGE_SIZE;
          const segmentSize = perSegment * PAGE_SIZE;
          const out = segments(size, segmentSize);
          expect(out.length).toBe(Math.ceil(size / segmentSize));
          let next = 0;
          out.forEach((s, i) => {
            expect(s.start).toBe(next);
            if (i < out.length - 1) expect(s.end - s.start).toBe(segmentSize);
            else expect(s.end - s.start).toBeGreaterThan(0);
            expect(s.end - s.start).toBeLessThanOrEqual(segmentSize);
            next = s.end;
          });
          expect(next).toBe(size);
        },
      ),
    );
  });

  test("rejects a segment size that is not a positive multiple of 512, and a misaligned size", () => {
    expect(segments(0, PAGE_SIZE)).toEqual([]);
    expect(() => segments(4096, 0)).toThrow(/segmentSize/);
    expect(() => segments(4096, -512)).toThrow(/segmentSize/);
    expect(() => segments(4096, 1000)).toThrow(/segmentSize/);
    expect(() => segments(100, 512)).toThrow(/size/);
  });
});
