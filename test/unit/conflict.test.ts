/** retryOnConflict: a row changed under its ETag is read and written again, a bounded number of times; other errors pass through at once. */
import { ConflictError, retryOnConflict } from "../../lib/lineage/types";

test("retries on ConflictError until the attempt succeeds", async () => {
  let calls = 0;
  const result = await retryOnConflict(5, async () => {
    calls += 1;
    if (calls < 3) throw new ConflictError("row changed");
    return "written";
  });
  expect(result).toBe("written");
  expect(calls).toBe(3);
});

test("gives up after the given number of attempts, rethrowing the conflict", async () => {
  let calls = 0;
  await expect(
    retryOnConflict(4, async () => {
      calls += 1;
      throw new ConflictError("row changed");
    }),
  ).rejects.toBeInstanceOf(ConflictError);
  expect(calls).toBe(4);
});

test("any other error is rethrown at once", async () => {
  let calls = 0;
  await expect(
    retryOnConflict(4, async () => {
      calls += 1;
      throw new Error("table unavailable");
    }),
  ).rejects.toThrow("table unavailable");
  expect(calls).toBe(1);
});
