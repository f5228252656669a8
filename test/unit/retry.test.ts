/**
 * withRetry: retryable failures (408, 429, 5xx, network) are retried up to `attempts` tries in all,
 * anything else fails at once; the backoff grows exponentially under a ceiling, with full jitter;
 * onRetry sees every retry. baseMs is 1 so the suite stays fast.
 */
import { withRetry, type RetryPolicy } from "../../lib/core/retry";

const busy = () => Object.assign(new Error("server busy"), { statusCode: 503 });
const throttled = () => Object.assign(new Error("too many"), { statusCode: 429 });
const reset = () => Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
const forbidden = () => Object.assign(new Error("forbidden"), { statusCode: 403 });

/** An operation failing with `failures` in order, then answering `value`. */
function flaky<T>(failures: (() => unknown)[], value: T) {
  let calls = 0;
  const op = jest.fn(async () => {
    const failure = failures[calls++];
    if (failure) throw failure();
    return value;
  });
  return op;
}

afterEach(() => jest.restoreAllMocks());

test("a success is returned at once", async () => {
  const op = flaky([], 42);
  const onRetry = jest.fn();
  await expect(withRetry({ attempts: 3, baseMs: 1, onRetry }, op)).resolves.toBe(42);
  expect(op).toHaveBeenCalledTimes(1);
  expect(onRetry).not.toHaveBeenCalled();
});

test("retryable failures are retried until the operation succeeds", async () => {
  const op = flaky([busy, throttled, reset], "ok");
  const onRetry = jest.fn();
  await expect(withRetry({ attempts: 4, baseMs: 1, onRetry }, op)).resolves.toBe("ok");
  expect(op).toHaveBeenCalledTimes(4);
  expect(onRetry).toHaveBeenCalledTimes(3);
  expect(
    onRetry.mock.calls.map(([err, attempt]) => [(err as { statusCode?: number }).statusCode, attempt]),
  ).toEqual([
    [503, 1],
    [429, 2],
    [undefined, 3],
  ]);
});

test("gives up after `attempts` tries in all and throws the last error", async () => {
  const errors = [busy(), busy(), busy(), busy()];
  let calls = 0;
  const op = jest.fn(async () => {
    throw errors[calls++];
  });
  const onRetry = jest.fn();
  await expect(withRetry({ attempts: 3, baseMs: 1, onRetry }, op)).rejects.toBe(errors[2]);
  expect(op).toHaveBeenCalledTimes(3);
  expect(onRetry).toHaveBeenCalledTimes(2);
});

test("attempts: 1 means a single try", async () => {
  const op = flaky([busy], "never");
  await expect(withRetry({ attempts: 1, baseMs: 1 }, op)).rejects.toMatchObject({ statusCode: 503 });
  expect(op).toHaveBeenCalledTimes(1);
});

test.each([
  ["403", forbidden],
  ["404", () => Object.assign(new Error("nf"), { statusCode: 404 })],
  ["409 BlobOverwritten", () => Object.assign(new Error("ow"), { statusCode: 409, code: "BlobOverwritten" })],
  ["412", () => Object.assign(new Error("etag"), { statusCode: 412 })],
  ["501", () => Object.assign(new Error("ni"), { statusCode: 501 })],
  ["a bug", () => new TypeError("x is undefined")],
])("%s is not retried", async (_name, failure) => {
  const op = flaky([failure], "never");
  const onRetry = jest.fn();
  await expect(withRetry({ attempts: 5, baseMs: 1, onRetry }, op)).rejects.toThrow();
  expect(op).toHaveBeenCalledTimes(1);
  expect(onRetry).not.toHaveBeenCalled();
});

test("the backoff doubles per try (full jitter: random × base × 2^(try-1))", async () => {
  jest.spyOn(Math, "random").mockReturnValue(0.5);
  const delays: number[] = [];
  const policy: RetryPolicy = { attempts: 6, baseMs: 1, onRetry: (_e, _a, delay) => delays.push(delay) };
  await expect(withRetry(policy, flaky([busy, busy, busy, busy, busy], "ok"))).resolves.toBe("ok");
  expect(delays).toEqual([0.5, 1, 2, 4, 8]);
});

test("the backoff stops growing at maxMs", async () => {
  jest.spyOn(Math, "random").mockReturnValue(0.999);
  const delays: number[] = [];
  const policy: RetryPolicy = { attempts: 7, baseMs: 1, maxMs: 4, onRetry: (_e, _a, d) => delays.push(d) };
  await withRetry(policy, flaky([busy, busy, busy, busy, busy, busy], "ok"));
  expect(delays.map((d) => Math.round(d / 0.999))).toEqual([1, 2, 4, 4, 4, 4]);
  expect(Math.max(...delays)).toBeLessThan(4);
});

test("with real jitter every delay stays within [0, base × 2^(try-1))", async () => {
  const seen: [number, number][] = [];
  await withRetry(
    { attempts: 6, baseMs: 1, onRetry: (_e, attempt, delay) => seen.push([attempt, delay]) },
    flaky([busy, busy, busy, busy, busy], "ok"),
  );
  expect(seen.map(([a]) => a)).toEqual([1, 2, 3, 4, 5]);
  for (const [attempt, delay] of seen) {
    expect(delay).toBeGreaterThanOrEqual(0);
    expect(delay).toBeLessThan(2 ** (attempt - 1));
  }
});

test("it actually waits the delay it reports", async () => {
  jest.spyOn(Math, "random").mockReturnValue(0.999);
  const started = Date.now();
  await withRetry({ attempts: 3, baseMs: 40 }, flaky([busy, busy], "ok")); // ≈ 40 + 80 ms
  expect(Date.now() - started).toBeGreaterThanOrEqual(100);
});
