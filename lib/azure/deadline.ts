/**
 * A deadline for every request of an Azure SDK client whose answers are read whole (the lineage's
 * Table Storage client): the request, headers and body, must be done within `ms`, or it is
 * aborted and fails with a retryable ETIMEDOUT error naming the method and the URL (without its
 * query, where a SAS could hide). Without it a table endpoint that accepts a connection and never
 * answers keeps a command alive for ever: the SDK's own timeout covers the headers only, and none
 * is set by default. The SDK's retries stay off beside it, so the lineage's one retry policy
 * (lib/core/retry) decides, and the longest wait is deadline × attempts plus the backoffs.
 *
 * A request that got no answer at all (refused, reset) fails the same way, naming the request and
 * keeping the network code (so it is still retried): "connect ECONNREFUSED 127.0.0.1:10002" alone
 * says neither what was asked nor of which table. An answer with a status passes unchanged: the
 * table store reads its status and code (404, 409, 412).
 */
import type { TableServiceClientOptions } from "@azure/data-tables";

/** The SDK pipeline's policy type, as the table client takes it (no direct dependency on core-rest-pipeline). */
type PipelinePolicy = NonNullable<TableServiceClientOptions["additionalPolicies"]>[number]["policy"];

export const DEADLINE_POLICY = "diskdeltaDeadline";

export class DeadlineError extends Error {
  readonly code = "ETIMEDOUT";

  constructor(method: string, url: string, ms: number) {
    super(`${method} ${url.replace(/\?.*$/, "")}: no answer within ${ms / 1000} s`);
    this.name = "DeadlineError";
  }
}

/** A table request that got no answer: its code (ECONNREFUSED, ECONNRESET, …) kept, the request named. */
export class NoAnswerError extends Error {
  constructor(
    method: string,
    url: string,
    readonly code: string | undefined,
    detail: string,
  ) {
    super(`${method} ${url.replace(/\?.*$/, "")}: ${detail}`);
    this.name = "NoAnswerError";
  }
}

export function deadlinePolicy(ms: number): PipelinePolicy {
  return {
    name: DEADLINE_POLICY,
    async sendRequest(request, next) {
      const controller = new AbortController();
      const outer = request.abortSignal;
      const forward = () => controller.abort();
      if (outer?.aborted) controller.abort();
      outer?.addEventListener("abort", forward);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, ms);
      // Never the reason a process stays alive.
      timer.unref();
      request.abortSignal = controller.signal;
      try {
        return await next(request);
      } catch (err) {
        if (timedOut) throw new DeadlineError(request.method, request.url, ms);
        const e = err as { statusCode?: unknown; code?: unknown; message?: unknown; name?: unknown };
        // Only the pipeline's own "no answer" (a RestError without a status): a sign-in failure
        // from the credential, say, passes as it is, with its own kind and words.
        if (e?.name === "RestError" && e.statusCode === undefined && typeof e.message === "string")
          throw new NoAnswerError(
            request.method,
            request.url,
            typeof e.code === "string" ? e.code : undefined,
            e.message.split("\n")[0],
          );
        throw err;
      } finally {
        clearTimeout(timer);
        outer?.removeEventListener("abort", forward);
        request.abortSignal = outer;
      }
    },
  };
}
