/**
 * Error classification: which failures are retried (408, 429, 5xx but 501/505, network), which are
 * diff refusals that call for a resync, and the sentence a user sees, which names the missing role
 * on 403 and never repeats request or response headers.
 */
import { RestError } from "@azure/storage-blob";
import { ChunkError } from "../../lib/copy";
import {
  describeStorageError,
  DIFF_REFUSALS,
  isDiffRefusal,
  isFenced,
  isNotFound,
  isNotImplemented,
} from "../../lib/storage/errors";
import { errorInfo, isRetryable } from "../../lib/core/retry";

/** The shape the storage SDK throws: a RestError with statusCode, code and details.errorCode. */
function storageError(status: number, code?: string, message = `${code ?? "Error"} happened\nRequestId:abc`) {
  const err = new RestError(message, { statusCode: status, code });
  (err as unknown as { details: unknown }).details = code ? { errorCode: code } : {};
  return err;
}

function networkError(code: string, message = `connect ${code}`) {
  return Object.assign(new Error(message), { code });
}

describe("isRetryable", () => {
  test.each([408, 429, 500, 502, 503, 504])("HTTP %i is retried", (status) => {
    expect(isRetryable(storageError(status, "ServerBusy"))).toBe(true);
    expect(isRetryable({ statusCode: status })).toBe(true);
  });

  test.each([400, 401, 403, 404, 409, 412, 416, 501, 505])("HTTP %i is not retried", (status) => {
    expect(isRetryable(storageError(status, "Whatever"))).toBe(false);
    expect(isRetryable({ statusCode: status })).toBe(false);
  });

  test("the diff refusals (409/400) are not retried", () => {
    for (const code of DIFF_REFUSALS) expect(isRetryable(storageError(409, code))).toBe(false);
  });

  test.each(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EPIPE", "EAI_AGAIN", "REQUEST_SEND_ERROR"])(
    "network error %s is retried",
    (code) => {
      expect(isRetryable(networkError(code))).toBe(true);
    },
  );

  test("'socket hang up' and a reset mentioned only in the message are retried", () => {
    expect(isRetryable(new Error("socket hang up"))).toBe(true);
    expect(isRetryable(new Error("read ECONNRESET"))).toBe(true);
    expect(isRetryable(new Error("other side closed"))).toBe(true);
    expect(isRetryable(new RestError("socket hang up", { code: "REQUEST_SEND_ERROR" }))).toBe(true);
  });

  test("a chunk's failure is judged by the storage call inside it", () => {
    expect(isRetryable(new ChunkError(3, storageError(503, "ServerBusy")))).toBe(true);
    expect(isRetryable(new ChunkError(3, networkError("ECONNRESET")))).toBe(true);
    expect(isRetryable(new ChunkError(3, storageError(403, "AuthorizationFailure")))).toBe(false);
  });

  test("a plain bug is not retried", () => {
    expect(isRetryable(new TypeError("cannot read properties of undefined"))).toBe(false);
    expect(isRetryable(new Error("boom"))).toBe(false);
    expect(isRetryable(undefined)).toBe(false);
    expect(isRetryable("a string")).toBe(false);
  });
});

describe("isDiffRefusal", () => {
  test.each([
    ["BlobOverwritten", 409],
    ["PreviousSnapshotNotFound", 409],
    ["PreviousSnapshotOperationNotSupported", 409],
    ["PreviousSnapshotCannotBeNewer", 400],
    ["BlobGenerationMismatch", 409],
  ])("%s (%i) is a refusal", (code, status) => {
    expect(isDiffRefusal(storageError(status, code))).toBe(true);
    // Found on `code` alone too, as some SDK paths set only that.
    expect(isDiffRefusal({ statusCode: status, code })).toBe(true);
  });

  test("exactly the five codes of AZURE-NOTES.md", () => {
    expect([...DIFF_REFUSALS].sort()).toEqual(
      [
        "BlobGenerationMismatch",
        "BlobOverwritten",
        "PreviousSnapshotCannotBeNewer",
        "PreviousSnapshotNotFound",
        "PreviousSnapshotOperationNotSupported",
      ].sort(),
    );
  });

  test.each([
    ["SnaphotOperationRateExceeded", 409],
    ["SnapshotCountExceeded", 409],
    ["ServerBusy", 503],
    ["BlobNotFound", 404],
    ["AuthorizationPermissionMismatch", 403],
  ])("%s (%i) is not a refusal", (code, status) => {
    expect(isDiffRefusal(storageError(status, code))).toBe(false);
  });

  test("errors without a code are not refusals", () => {
    expect(isDiffRefusal(new Error("PreviousSnapshotNotFound"))).toBe(false);
    expect(isDiffRefusal({ statusCode: 409 })).toBe(false);
  });
});

describe("isFenced", () => {
  test("a sequence-number refusal, bare or inside a chunk's failure, is a fence", () => {
    const refused = storageError(412, "SequenceNumberConditionNotMet");
    expect(isFenced(refused)).toBe(true);
    expect(isFenced(new ChunkError(0, refused))).toBe(true);
    expect(isFenced(storageError(412, "ConditionNotMet"))).toBe(false);
    expect(isFenced(new ChunkError(0, storageError(503)))).toBe(false);
  });
});

describe("isNotFound / isNotImplemented", () => {
  test("404 is not found", () => {
    expect(isNotFound(storageError(404, "BlobNotFound"))).toBe(true);
    expect(isNotFound(storageError(409, "BlobOverwritten"))).toBe(false);
  });

  test("501, APINotImplemented and FeatureNotSupported are not implemented", () => {
    expect(isNotImplemented(storageError(501, "APINotImplemented"))).toBe(true);
    expect(isNotImplemented(storageError(500, "FeatureNotSupported"))).toBe(true);
    expect(isNotImplemented(storageError(500, "InternalError"))).toBe(false);
  });
});

describe("errorInfo", () => {
  test("takes status, the service's error code and the first line of the message", () => {
    expect(
      errorInfo(storageError(412, "ConditionNotMet", "The condition specified was not met.\nRequestId:x")),
    ).toEqual({
      status: 412,
      code: "ConditionNotMet",
      message: "The condition specified was not met.",
    });
  });

  test("details.errorCode wins over code", () => {
    const err = Object.assign(new Error("x"), {
      statusCode: 409,
      code: "Generic",
      details: { errorCode: "BlobOverwritten" },
    });
    expect(errorInfo(err).code).toBe("BlobOverwritten");
  });

  test("non-errors", () => {
    expect(errorInfo("plain")).toEqual({ status: undefined, code: undefined, message: "plain" });
    expect(errorInfo(undefined).message).toBe("undefined");
  });
});

describe("describeStorageError", () => {
  const SECRET = "SharedKey srcacct:c2VjcmV0c2lnbmF0dXJl";
  const SAS = "sig=c2VjcmV0c2FzPQ%3D%3D";

  /** A RestError as the SDK throws it, with the request (and its Authorization header) attached. */
  function withHeaders(status: number, code: string) {
    const err = storageError(status, code, `This request is not authorized.\nRequestId:1\nTime:2024`);
    Object.assign(err, {
      request: {
        url: `https://srcacct.blob.core.windows.net/vhds/disk.vhd?${SAS}`,
        headers: { get: () => SECRET, toJSON: () => ({ authorization: SECRET }), authorization: SECRET },
      },
      response: { headers: { "x-ms-request-id": "1", authorization: SECRET } },
    });
    return err;
  }

  test("403 names the resource, the code and the role to grant", () => {
    const text = describeStorageError(
      withHeaders(403, "AuthorizationPermissionMismatch"),
      "backup blob https://bak.blob.core.windows.net/diskdelta/d1",
      "Storage Blob Data Contributor",
    );
    expect(text).toBe(
      'access denied to backup blob https://bak.blob.core.windows.net/diskdelta/d1 (AuthorizationPermissionMismatch): the identity needs the role "Storage Blob Data Contributor" on that account, or give its key in STORAGE_ACCOUNT_KEYS',
    );
  });

  test("403 without a code still names the role", () => {
    expect(describeStorageError({ statusCode: 403 }, "disk d1", "Storage Blob Data Reader")).toContain(
      '(403): the identity needs the role "Storage Blob Data Reader"',
    );
  });

  test.each([
    [403, "AuthenticationFailed"],
    [404, "BlobNotFound"],
    [409, "BlobOverwritten"],
    [500, "InternalError"],
  ])("%i %s never echoes request or response headers, nor a SAS", (status, code) => {
    const text = describeStorageError(withHeaders(status, code), "disk d1", "Storage Blob Data Contributor");
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain("c2VjcmV0");
    expect(text).not.toContain(SAS);
    expect(text).not.toMatch(/authorization|RequestId|\n/i);
  });

  test("404 says not found", () => {
    expect(describeStorageError(storageError(404, "ContainerNotFound"), "container c01", "r")).toBe(
      "container c01 was not found (ContainerNotFound)",
    );
  });

  test("an unreachable endpoint says so and suggests the fix", () => {
    expect(describeStorageError(networkError("ECONNREFUSED"), "http://127.0.0.1:1/acct", "r")).toBe(
      "cannot reach http://127.0.0.1:1/acct: ECONNREFUSED; check the URL and that the endpoint is running",
    );
    expect(describeStorageError(networkError("ENOTFOUND"), "x", "r")).toMatch(/^cannot reach x: ENOTFOUND/);
  });

  test("other failures give code, status and the first line of the message", () => {
    expect(
      describeStorageError(
        storageError(409, "LeaseIdMissing", "There is a lease.\nRequestId:9"),
        "blob b",
        "r",
      ),
    ).toBe("blob b: LeaseIdMissing (409) There is a lease.");
    expect(describeStorageError({ statusCode: 502, message: "Bad gateway" }, "blob b", "r")).toBe(
      "blob b: HTTP 502 Bad gateway",
    );
  });
});
