/**
 * Bounded parallelism and the small pieces a pipeline is built from. Guarantees: at most
 * `concurrency` items are in flight and items are pulled from their source only when a worker is
 * free, so a long plan is never materialized; the first failure stops new work and is rethrown
 * after the items in flight settle (no work is left running behind a thrown error).
 */

/** Runs `work` over a lazy sequence (sync or async), `concurrency` at a time. */
export async function forEachBounded<T>(
  items: Iterable<T> | AsyncIterable<T> | Iterator<T>,
  concurrency: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  const source = items as Partial<Iterable<T> & AsyncIterable<T>>;
  const iterator: Iterator<T> | AsyncIterator<T> =
    typeof source[Symbol.asyncIterator] === "function"
      ? source[Symbol.asyncIterator]!()
      : typeof source[Symbol.iterator] === "function"
        ? source[Symbol.iterator]!()
        : (items as Iterator<T>);
  let failure: { err: unknown } | undefined;
  // Pulls are serialized: an async iterator must not be asked for its next item concurrently.
  let pulling: Promise<unknown> = Promise.resolve();
  const pull = (): Promise<IteratorResult<T>> => {
    const next = pulling.then(() => iterator.next());
    pulling = next.catch(() => undefined);
    return next;
  };
  const worker = async () => {
    while (!failure) {
      let next: IteratorResult<T>;
      try {
        next = await pull();
      } catch (err) {
        failure ??= { err };
        return;
      }
      if (next.done || failure) return;
      try {
        await work(next.value);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  if (failure) {
    // Let the source clean up (an async generator's finally blocks run on return()).
    await Promise.resolve(iterator.return?.()).catch(() => undefined);
    throw failure.err;
  }
}

/**
 * The contiguous finished prefix of work laid out in disk order. Items are registered in the
 * order of their start offsets; `done(item)` may come in any order; `prefix` is the offset below
 * which every registered item is done, never past `frontier` (how far registration has come).
 * Each item carries counters that are summed into `committed` as the prefix passes it, so what
 * a checkpoint records is exactly what lies below it: a run resumed from there counts the same
 * as one never interrupted.
 */
export class PrefixTracker<C extends Record<string, number>> {
  private readonly queue: Array<{ start: number; done: boolean; counts: Partial<C>; marker?: boolean }> = [];
  private head = 0;
  private frontierAt: number;
  private lastStart: number;
  readonly committed: C;

  constructor(start: number, committed: C) {
    this.frontierAt = start;
    this.lastStart = start;
    this.committed = { ...committed };
  }

  /** Registers an item starting at `start` (≥ every earlier one); returns its handle. */
  add(start: number, counts: Partial<C> = {}): object {
    if (start < this.lastStart)
      throw new Error(`prefix item at ${start} registered after one at ${this.lastStart}`);
    this.lastStart = start;
    const item = { start, done: false, counts };
    this.queue.push(item);
    return item;
  }

  /** Says that registration has covered the disk up to `offset` (everything below it is registered). */
  advance(offset: number, counts: Partial<C> = {}): void {
    if (offset < this.frontierAt) return;
    this.lastStart = Math.max(this.lastStart, offset);
    // A marker item, done at once: its counts (e.g. ranges listed) commit when the prefix reaches it.
    this.queue.push({ start: offset, done: true, counts, marker: true });
    this.frontierAt = offset;
    this.drain();
  }

  done(handle: object, extra: Partial<C> = {}): void {
    const item = handle as { done: boolean; counts: Partial<C> };
    item.done = true;
    for (const [k, v] of Object.entries(extra)) {
      (item.counts as Record<string, number>)[k] =
        ((item.counts as Record<string, number>)[k] ?? 0) + (v as number);
    }
    this.drain();
  }

  private drain(): void {
    // An item at or past the frontier is not passed, even when done: its piece is still being
    // registered, the prefix cannot move beyond the frontier, and committing its counters would
    // record them in a checkpoint at an offset below the item, so a resumed run would count it twice.
    while (
      this.head < this.queue.length &&
      this.queue[this.head].done &&
      (this.queue[this.head].marker || this.queue[this.head].start < this.frontierAt)
    ) {
      const item = this.queue[this.head];
      for (const [k, v] of Object.entries(item.counts)) {
        (this.committed as Record<string, number>)[k] += v as number;
      }
      this.queue[this.head] = undefined as never;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Offset below which every item is done. */
  get prefix(): number {
    return this.head < this.queue.length ? this.queue[this.head].start : this.frontierAt;
  }

  get frontier(): number {
    return this.frontierAt;
  }

  /** Items registered and not yet passed by the prefix (done or not). */
  get pending(): number {
    return this.queue.length - this.head;
  }
}

/**
 * A bounded, ordered hand-over between one producer and one consumer: `push` waits while
 * `capacity` items are unread, so a producer running ahead holds at most that many; `fail`
 * delivers an error to the consumer after the items already pushed; `cancel` (the consumer gave
 * up) makes every later `push` reject, so an abandoned producer stops instead of waiting forever.
 */
export class Channel<T> {
  private readonly items: T[] = [];
  private ended = false;
  private error?: { err: unknown };
  private cancelled = false;
  private wakeConsumer?: () => void;
  private wakeProducer?: () => void;

  constructor(private readonly capacity: number) {}

  async push(item: T): Promise<void> {
    while (this.items.length >= this.capacity && !this.cancelled) {
      await new Promise<void>((resolve) => (this.wakeProducer = resolve));
    }
    if (this.cancelled) throw new Error("the consumer stopped reading");
    this.items.push(item);
    this.wake();
  }

  close(): void {
    this.ended = true;
    this.wake();
  }

  fail(err: unknown): void {
    this.error ??= { err };
    this.ended = true;
    this.wake();
  }

  cancel(): void {
    this.cancelled = true;
    const p = this.wakeProducer;
    this.wakeProducer = undefined;
    p?.();
  }

  private wake(): void {
    const c = this.wakeConsumer;
    this.wakeConsumer = undefined;
    c?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) {
        const item = this.items.shift()!;
        const p = this.wakeProducer;
        this.wakeProducer = undefined;
        p?.();
        yield item;
        continue;
      }
      if (this.ended) {
        if (this.error) throw this.error.err;
        return;
      }
      await new Promise<void>((resolve) => (this.wakeConsumer = resolve));
    }
  }
}

/**
 * `work` over a lazy sequence, `concurrency` at a time, with the results handed to `deliver` in
 * the order of the input (each as soon as it and every earlier one is done). A worker whose result
 * waits for an earlier one takes no new item, so at most `concurrency` items are in flight or
 * waiting, however long the input and however slow one item is.
 */
export async function forEachOrdered<T, R>(
  items: Iterable<T> | AsyncIterable<T>,
  concurrency: number,
  work: (item: T) => Promise<R>,
  deliver: (result: R, item: T) => void | Promise<void>,
): Promise<void> {
  let nextIn = 0;
  let nextOut = 0;
  const ready = new Map<number, { result: R; item: T; delivered: () => void }>();
  let flushing = false;
  let failure: { err: unknown } | undefined;
  const flush = async () => {
    if (flushing) return;
    flushing = true;
    try {
      while (ready.has(nextOut) && !failure) {
        const entry = ready.get(nextOut)!;
        ready.delete(nextOut);
        nextOut++;
        try {
          await deliver(entry.result, entry.item);
        } catch (err) {
          failure ??= { err };
        }
        entry.delivered();
      }
    } finally {
      flushing = false;
    }
    if (failure) for (const e of ready.values()) e.delivered();
  };
  const numbered = (async function* () {
    for await (const item of items as AsyncIterable<T>) yield { n: nextIn++, item };
  })();
  // `failure` is set by `flush`, behind awaits TypeScript does not follow: read it through this.
  const rethrow = () => {
    const failed = failure as { err: unknown } | undefined;
    if (failed) throw failed.err;
  };
  await forEachBounded(numbered, concurrency, async ({ n, item }) => {
    rethrow();
    const result = await work(item);
    await new Promise<void>((delivered) => {
      ready.set(n, { result, item, delivered });
      void flush();
    });
    rethrow();
  });
  rethrow();
}
