/**
 * Classifies storage errors in one place, so the rest of the engine asks questions ("retry?",
 * "resync?", "what is the fix?") instead of matching status codes. Messages name the resource and
 * the fix and never include request headers (where a SAS or key could hide).
 */

export interface StorageErrorInfo {
  status?: number;
  code?: string;
  message: string;
}

export function errorInfo(err: unknown): StorageErrorInfo {
  const e = err as { statusCode?: number; code?: string; message?: string; details?: { errorCode?: string } };
  const code = e?.details?.errorCode ?? (typeof e?.code === "string" ? e.code : undefined);
  const firstLine = String(e?.message ?? err).split("\n")[0];
  return { status: typeof e?.statusCode === "number" ? e.statusCode : undefined, code, message: firstLine };
}

const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNABORTED",
  "REQUEST_SEND_ERROR",
  "UND_ERR_SOCKET",
]);

/**
 * The storage error behind a wrapper: a ChunkError (lib/copy) carries no status or code of its
 * own, only the failed call as its `cause`. Every classification below looks at that call.
 */
function storageErrorOf(err: unknown): unknown {
  let e = err;
  for (let depth = 0; depth < 4; depth++) {
    const { status, code } = errorInfo(e);
    const cause = (e as { cause?: unknown } | undefined)?.cause;
    if (status !== undefined || code !== undefined || cause === undefined) return e;
    e = cause;
  }
  return e;
}

/** 408, 429, 5xx (except 501 Not Implemented and 505) and network failures; nothing else is retried. */
export function isRetryable(err: unknown): boolean {
  const e = storageErrorOf(err);
  const { status, code } = errorInfo(e);
  if (status === undefined) {
    // No HTTP answer at all: a reset, refused or timed-out connection.
    return (
      (code !== undefined && NETWORK_CODES.has(code)) ||
      /socket hang up|ECONNRESET|EPIPE|other side closed/i.test(String((e as Error)?.message))
    );
  }
  if (status === 408 || status === 429) return true;
  return status >= 500 && status !== 501 && status !== 505;
}

/**
 * A write refused because the backup blob's sequence number is no longer the writer's fence: a
 * newer run owns the blob (lib/copy).
 */
export function isFenced(err: unknown): boolean {
  return errorInfo(storageErrorOf(err)).code === "SequenceNumberConditionNotMet";
}

/** Codes with which the service refuses a page-range diff; the right answer is a resync. */
export const DIFF_REFUSALS = new Set([
  "BlobOverwritten",
  "PreviousSnapshotNotFound",
  "PreviousSnapshotOperationNotSupported",
  "PreviousSnapshotCannotBeNewer",
  "BlobGenerationMismatch",
]);

export function isDiffRefusal(err: unknown): boolean {
  const { code } = errorInfo(err);
  return code !== undefined && DIFF_REFUSALS.has(code);
}

export function isNotFound(err: unknown): boolean {
  return errorInfo(err).status === 404;
}

export function isNotImplemented(err: unknown): boolean {
  const { status, code } = errorInfo(err);
  return status === 501 || code === "APINotImplemented" || code === "FeatureNotSupported";
}

/** A user-facing sentence for a failed call on `resource`, naming the missing role on 403. */
export function describeStorageError(err: unknown, resource: string, neededRole: string): string {
  const { status, code, message } = errorInfo(err);
  if (status === 403) {
    return `access denied to ${resource} (${code ?? "403"}): the identity needs the role "${neededRole}" on that account, or give its key in STORAGE_ACCOUNT_KEYS`;
  }
  if (status === 404) return `${resource} was not found (${code ?? "404"})`;
  if (status === undefined && /ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(`${code} ${message}`)) {
    return `cannot reach ${resource}: ${code ?? message}; check the URL and that the endpoint is running`;
  }
  return `${resource}: ${code ? `${code} (${status}) ` : status ? `HTTP ${status} ` : ""}${message}`;
}
