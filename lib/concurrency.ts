/**
 * Bounded parallelism over a lazy sequence: at most `concurrency` items are in flight and items
 * are pulled from the iterator only when a worker is free, so a long plan is never materialized.
 */

/**
 * The first failure stops new work and is rethrown after
 * the in-flight items settle.
 */
export async function forEachBounded<T>(
  items: Iterable<T> | Iterator<T>,
  concurrency: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  const iterator: Iterator<T> =
    Symbol.iterator in (items as object) ? (items as Iterable<T>)[Symbol.iterator]() : (items as Iterator<T>);
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined) {
      const next = iterator.next();
      if (next.done) return;
      try {
        await work(next.value);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  if (failure !== undefined) throw failure;
}
