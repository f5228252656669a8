/**
 * The HTTP API (function-level keys in Azure; JSON in and out). Each handler reads its route
 * parameters, query and body, calls one use case of lib/app/api.ts and maps the result or error to
 * a status. Guarantees: bad input is a 4xx whose `error` names the problem (malformed JSON, an
 * unknown or mistyped field, a bad id: 400; a body over 64 KiB: 413; an unknown disk, run or
 * point: 404; a busy disk or a taken name: 409), never a 500; an unexpected error is a 500 with a
 * generic message and the invocation id, its detail only in the log, so nothing the storage SDK
 * put in an error (URLs, headers) can reach a caller.
 */
import type { HttpRequest, HttpResponseInit, InvocationContext } from "@azure/functions";
import * as api from "../lib/app/api";
import type { App } from "../lib/app/context";
import { defineFunctions } from "../lib/app/register";
import { appFor } from "../lib/compose/runtime";
import { ConfigError } from "../lib/config/settings";
import {
  BusyError,
  ConflictError,
  InputError,
  IntegrityError,
  NotFoundError,
  renderProblem,
  type FieldWords,
} from "../lib/core/errors";
import { MessageError } from "../lib/queues/messages";

/** How the HTTP API names a field: as the body field it is, or as the part of the URL. */
export const httpWords: FieldWords = (field) => {
  switch (field) {
    case "diskId":
      return "the disk id in the URL";
    case "runId":
      return "the run id in the URL";
    case "limit":
      return "query parameter limit";
    default:
      return `"${field}"`;
  }
};

/** Every body this API takes is a few hundred bytes; the queue's own message limit is 64 KiB too. */
export const MAX_BODY_BYTES = 64 * 1024;

/** A response decided while reading the request: a body too large, or not JSON. */
class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "RequestError";
  }
}

/**
 * The body as text, refused once it passes MAX_BODY_BYTES: a declared Content-Length is believed
 * before reading, and a stream without one is cut off at the limit rather than buffered whole.
 */
async function readText(request: HttpRequest): Promise<string> {
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > MAX_BODY_BYTES) throw tooLarge(declared);
  const stream = request.body;
  if (!stream) return "";
  const reader = stream.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = (await reader.read()) as { done: boolean; value?: Uint8Array };
    if (done) break;
    if (!value) continue;
    total += value.byteLength;
    if (total > MAX_BODY_BYTES) {
      await reader.cancel();
      throw tooLarge(total);
    }
    parts.push(value);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(parts));
  } catch {
    throw new RequestError(400, "the request body is not UTF-8 text");
  }
}

function tooLarge(bytes: number): RequestError {
  return new RequestError(413, `the request body is larger than ${MAX_BODY_BYTES} bytes (at least ${bytes})`);
}

/** The parsed JSON body, or undefined for an empty one (the use case decides whether that is allowed). */
async function readJson(request: HttpRequest): Promise<unknown> {
  const text = await readText(request);
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new RequestError(400, `the request body is not valid JSON: ${(err as Error).message}`);
  }
}

function json(status: number, body: unknown, headers?: Record<string, string>): HttpResponseInit {
  return { status, jsonBody: body, headers: { "Content-Type": "application/json", ...headers } };
}

/** Maps an error to its answer; the only place that decides which failures a caller may read. */
export function errorResponse(err: unknown, context: InvocationContext): HttpResponseInit {
  if (err instanceof RequestError) return json(err.status, { error: err.message });
  if (err instanceof InputError) {
    return json(400, {
      error: err.render(httpWords),
      problems: err.problems.map((p) => ({
        field: p.field,
        message: renderProblem({ ...p, field: undefined }, httpWords),
      })),
    });
  }
  if (err instanceof ConfigError || err instanceof MessageError) return json(400, { error: err.message });
  if (err instanceof NotFoundError) return json(404, { error: err.render(httpWords) });
  if (err instanceof BusyError) {
    const location = api.runLocation(err.diskId, err.activeRunId);
    return json(
      409,
      {
        error: `${err.message}; poll ${location}`,
        activeRunId: err.activeRunId,
        holder: err.holder,
        until: err.until,
        location,
      },
      { Location: location },
    );
  }
  if (err instanceof ConflictError) return json(409, { error: err.message });
  if (err instanceof IntegrityError) return json(409, { error: err.render(httpWords) });
  context.error(`${context.functionName} failed: ${(err as Error)?.stack ?? String(err)}`);
  return json(500, {
    error: `internal error; the function's log has the detail (invocation ${context.invocationId})`,
  });
}

/** Runs one use case with the app and maps whatever it throws. */
function handler(
  work: (app: App, request: HttpRequest) => Promise<HttpResponseInit>,
): (request: HttpRequest, context: InvocationContext) => Promise<HttpResponseInit> {
  return async (request, context) => {
    try {
      return await work(await appFor(context), request);
    } catch (err) {
      return errorResponse(err, context);
    }
  };
}

export const registerDisk = handler(async (app, request) => {
  const disk = await api.registerDisk(app, await readJson(request));
  return json(201, disk, { Location: api.diskLocation(disk.id) });
});

export const listDisks = handler(async (app) => json(200, await api.listDisks(app)));

export const getDisk = handler(async (app, request) => json(200, await api.getDisk(app, request.params.id)));

export const changeDisk = handler(async (app, request) =>
  json(200, await api.changeDisk(app, request.params.id, await readJson(request))),
);

export const startBackup = handler(async (app, request) => {
  const started = await api.startBackup(app, request.params.id, await readJson(request));
  return json(202, started, { Location: started.location });
});

export const listRuns = handler(async (app, request) =>
  json(200, await api.listRuns(app, request.params.id, request.query.get("limit"))),
);

export const getRun = handler(async (app, request) =>
  json(200, await api.getRun(app, request.params.id, request.params.runId)),
);

export const listPoints = handler(async (app, request) =>
  json(200, await api.listPoints(app, request.params.id, request.query.get("limit"))),
);

export const startRestore = handler(async (app, request) => {
  const started = await api.startRestore(app, request.params.id, await readJson(request));
  return json(202, started, { Location: started.location });
});

export const functions = defineFunctions([
  { kind: "http", name: "registerDisk", route: "disks", methods: ["POST"], handler: registerDisk },
  { kind: "http", name: "listDisks", route: "disks", methods: ["GET"], handler: listDisks },
  { kind: "http", name: "getDisk", route: "disks/{id}", methods: ["GET"], handler: getDisk },
  { kind: "http", name: "changeDisk", route: "disks/{id}", methods: ["PATCH"], handler: changeDisk },
  { kind: "http", name: "startBackup", route: "disks/{id}/backups", methods: ["POST"], handler: startBackup },
  { kind: "http", name: "listRuns", route: "disks/{id}/runs", methods: ["GET"], handler: listRuns },
  { kind: "http", name: "getRun", route: "disks/{id}/runs/{runId}", methods: ["GET"], handler: getRun },
  { kind: "http", name: "listPoints", route: "disks/{id}/points", methods: ["GET"], handler: listPoints },
  {
    kind: "http",
    name: "startRestore",
    route: "disks/{id}/restores",
    methods: ["POST"],
    handler: startRestore,
  },
]);
