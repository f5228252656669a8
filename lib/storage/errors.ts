/**
 * Storage failures, classified in one place, so the rest of the engine asks questions ("retry?",
 * "resync?", "fenced?") instead of matching status codes. A StorageError names the operation and
 * what it was applied to (blob, snapshot, range) in one readable line, and never carries request
 * headers or a URL query, where a SAS or key could hide.
 */
import { errorInfo, rootCause } from "../core/retry";

export class StorageError extends Error {
  constructor(
    readonly op: string,
    readonly target: string,
    readonly statusCode: number | undefined,
    readonly code: string | undefined,
    /** What the service (or the store) said, without the operation and target. */
    readonly detail: string,
    /** Set for failures a retry may cure that carry no HTTP status (a stalled or cut body). */
    readonly retryable?: boolean,
  ) {
    const what = code
      ? `${code}${statusCode ? ` (${statusCode})` : ""}`
      : statusCode
        ? `HTTP ${statusCode}`
        : "";
    super(`${op} ${target}: ${[what, detail].filter(Boolean).join(" ")}`.trim());
    this.name = "StorageError";
  }
}

/** Codes with which the service refuses a page-range diff; the right answer is a resync by compare. */
export const DIFF_REFUSALS = new Set([
  "BlobOverwritten",
  "PreviousSnapshotNotFound",
  "PreviousSnapshotOperationNotSupported",
  "PreviousSnapshotCannotBeNewer",
  "BlobGenerationMismatch",
]);

export function isDiffRefusal(err: unknown): boolean {
  const { code } = errorInfo(rootCause(err));
  return code !== undefined && DIFF_REFUSALS.has(code);
}

export function isNotFound(err: unknown): boolean {
  return errorInfo(rootCause(err)).status === 404;
}

export function isNotImplemented(err: unknown): boolean {
  const { status, code } = errorInfo(rootCause(err));
  return status === 501 || code === "APINotImplemented" || code === "FeatureNotSupported";
}

/** A write refused because the blob's sequence number is no longer the writer's fence: a newer run owns it. */
export function isFenced(err: unknown): boolean {
  return errorInfo(rootCause(err)).code === "SequenceNumberConditionNotMet";
}

/** A listing the service (or our deadline) gave up on: on a large span, split it rather than repeat it. */
export function isTimeout(err: unknown): boolean {
  const { status, code } = errorInfo(rootCause(err));
  return status === 408 || code === "OperationTimedOut" || code === "HeadersTimedOut" || code === "ETIMEDOUT";
}

export function isAlreadyExists(err: unknown): boolean {
  const { status, code } = errorInfo(rootCause(err));
  return status === 409 && (code === "BlobAlreadyExists" || code === undefined);
}

/**
 * A user-facing sentence for a failed call on `resource`: an access-denied answer names the role
 * that is missing, a not-found says so, an unreachable endpoint says how to check it.
 */
export function describeStorageError(err: unknown, resource: string, neededRole: string): string {
  const { status, code, message } = errorInfo(rootCause(err));
  if (status === 403) {
    // AuthenticationFailed is a refused signature: a wrong key (or a token for another tenant), never a missing role.
    if (code === "AuthenticationFailed")
      return `${resource} refused the credential (AuthenticationFailed): check the account's key in STORAGE_ACCOUNT_KEYS, or the identity's sign-in`;
    const denied = `access denied to ${resource} (${code ?? "403"}): the identity needs the role "${neededRole}" on that account, or give its key in STORAGE_ACCOUNT_KEYS`;
    // AuthorizationFailure is also what a wrong shared key gets from Azurite (and a firewall's refusal on Azure).
    return code === "AuthorizationFailure" ? `${denied} (if a key is given there, check it)` : denied;
  }
  if (status === 404) return `${resource} was not found (${code ?? "404"})`;
  if (status === undefined && /ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(`${code} ${message}`)) {
    return `cannot reach ${resource}: ${code ?? message}; check the URL and that the endpoint is running`;
  }
  if (err instanceof StorageError) return `${resource}: ${message}`;
  return `${resource}: ${code ? `${code} (${status}) ` : status ? `HTTP ${status} ` : ""}${message}`;
}
