/**
 * The checkpoint's counters are exactly its prefix's (issue 13 item 6): an item done before its
 * piece's end is registered must not be committed while the prefix still stands at the piece's
 * start — the case a copy with concurrency 1 hits on every piece, and a SIGKILL right after such
 * a checkpoint made the resumed run count that chunk twice (faults.test.ts).
 */
import { PrefixTracker } from "../../lib/core/concurrency";

const ZERO = { chunks: 0, bytes: 0, ranges: 0 };

test("an item done before its piece's end is registered is not committed while the prefix stands at the piece's start", () => {
  const t = new PrefixTracker(0, { ...ZERO });
  // Piece [0, 4): one chunk, done, then the piece's end.
  const a = t.add(0, { chunks: 1, bytes: 4 });
  t.done(a);
  expect([t.prefix, t.committed.chunks]).toEqual([0, 0]);
  t.advance(4, { ranges: 1 });
  expect([t.prefix, t.committed]).toEqual([4, { chunks: 1, bytes: 4, ranges: 1 }]);
  // Piece [4, 8): its chunk is done (concurrency 1: before the piece's end is registered).
  const b = t.add(4, { chunks: 1, bytes: 4 });
  t.done(b);
  // A checkpoint now records offset 4: its counters must not hold the chunk at 4.
  expect([t.prefix, t.committed.chunks, t.committed.bytes]).toEqual([4, 1, 4]);
  t.advance(8, { ranges: 1 });
  expect([t.prefix, t.committed]).toEqual([8, { chunks: 2, bytes: 8, ranges: 2 }]);
});

test("resumed at any checkpoint, the counters add up to those of a run never interrupted", () => {
  // Pieces of 4 with one chunk each, done in random order with random lag; a checkpoint is taken
  // after every event, and "resuming" from it replays the rest: the sums must always agree.
  const pieces = 12;
  const run = (from: number, committed: typeof ZERO, onEvent?: (t: PrefixTracker<typeof ZERO>) => void) => {
    const t = new PrefixTracker(from, { ...committed });
    const open: object[] = [];
    let seed = from * 7919 + 17;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let p = from / 4; p < pieces; p++) {
      open.push(t.add(p * 4, { chunks: 1, bytes: 4 }));
      while (open.length > 0 && rand() < 0.6) {
        t.done(open.splice(Math.floor(rand() * open.length), 1)[0]);
        onEvent?.(t);
      }
      t.advance(p * 4 + 4, { ranges: 1 });
      onEvent?.(t);
    }
    while (open.length > 0) {
      t.done(open.shift()!);
      onEvent?.(t);
    }
    return t;
  };
  const whole = run(0, ZERO).committed;
  expect(whole).toEqual({ chunks: pieces, bytes: 4 * pieces, ranges: pieces });
  const checkpoints: Array<{ at: number; counts: typeof ZERO }> = [];
  run(0, ZERO, (t) => checkpoints.push({ at: t.prefix, counts: { ...t.committed } }));
  for (const c of checkpoints) {
    expect(c.at % 4).toBe(0);
    expect(run(c.at, c.counts).committed).toEqual(whole);
  }
});
