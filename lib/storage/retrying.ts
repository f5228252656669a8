/**
 * Retry as a wrapper around any PageStore (kopia's shape): every operation is retried under one
 * policy (lib/core/retry.ts: 408, 429, 5xx, network failures, stalled or cut bodies, with
 * backoff and jitter). A listing that asked to split on timeout gets its timeout back at once,
 * so the caller can halve the span instead of asking again for what the service cannot answer.
 */
import { isRetryable as defaultRetryable, withRetry, type RetryPolicy } from "../core/retry";
import { isTimeout } from "./errors";
import type { ListOptions, PageStore } from "./port";

export function retrying(store: PageStore, policy: RetryPolicy): PageStore {
  const again = <T>(op: () => Promise<T>) => withRetry(policy, op);
  const listing = (options: ListOptions | undefined): RetryPolicy =>
    options?.splitOnTimeout
      ? { ...policy, retryable: (err) => !isTimeout(err) && (policy.retryable ?? defaultRetryable)(err) }
      : policy;
  return {
    properties: (a) => again(() => store.properties(a)),
    ensureContainer: (l) => again(() => store.ensureContainer(l)),
    create: (a, size, o) => again(() => store.create(a, size, o)),
    resize: (a, size) => again(() => store.resize(a, size)),
    setSequenceNumber: (a, v) => again(() => store.setSequenceNumber(a, v)),
    delete: (a) => again(() => store.delete(a)),
    snapshot: (a, m) => again(() => store.snapshot(a, m)),
    listSnapshots: (l) => again(() => store.listSnapshots(l)),
    listRanges: (a, span, o) => withRetry(listing(o), () => store.listRanges(a, span, o)),
    listDiff: (a, span, base, o) => withRetry(listing(o), () => store.listDiff(a, span, base, o)),
    read: (a, r, o) => again(() => store.read(a, r, o)),
    write: (a, offset, data, c) => again(() => store.write(a, offset, data, c)),
    writeFrom: (a, offset, source, length, c) => again(() => store.writeFrom(a, offset, source, length, c)),
    clear: (a, r, c) => again(() => store.clear(a, r, c)),
    putBlock: (l, id, data) => again(() => store.putBlock(l, id, data)),
    commitBlocks: (l, ids, m) => again(() => store.commitBlocks(l, ids, m)),
    blocks: (l) => again(() => store.blocks(l)),
    readBlob: (l, offset, count) => again(() => store.readBlob(l, offset, count)),
    ...(store.release ? { release: (data: Buffer) => store.release!(data) } : {}),
  };
}
