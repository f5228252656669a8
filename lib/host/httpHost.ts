/**
 * The HTTP trigger as `func start` serves it: every http function at `/api/<route>`, route
 * templates with `{name}` parameters (`{name?}` optional, `{name:constraint}` accepted, `{*rest}`
 * catch-all), literal segments matched case-insensitively and preferred over parameters. An
 * unknown path answers 404, a known path with another method 405 with `Allow`; a body above the
 * host's limit 413; a handler that throws 500 (logged, never echoed). Function keys are not
 * required locally, as with func start. The handler gets a real HttpRequest (method, url, headers,
 * query, params, body) and its HttpResponseInit is written as the host would (jsonBody as JSON).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { HttpRequest, HttpResponse, type HttpResponseInit } from "@azure/functions";
import type { HttpFunctionSpec } from "../app/register";
import { errorText, newContext, type HostLogger } from "./invocation";

/** The Functions host refuses bodies above 100 MB (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT default). */
export const MAX_BODY_BYTES = 100 * 1024 * 1024;

interface Segment {
  literal?: string;
  param?: string;
  optional?: boolean;
  catchAll?: boolean;
}

interface Route {
  spec: HttpFunctionSpec;
  segments: Segment[];
}

export function parseRoute(template: string): Segment[] {
  return template
    .split("/")
    .filter(Boolean)
    .map((part) => {
      const m = /^\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]*)?(\?)?\}$/.exec(part);
      if (!m) {
        if (/[{}]/.test(part))
          throw new Error(`route ${template}: segment ${part} is not {name}, {name?} or literal`);
        return { literal: part.toLowerCase() };
      }
      return { param: m[2], catchAll: Boolean(m[1]), optional: Boolean(m[3]) || Boolean(m[1]) };
    });
}

/** Route params when `path` (already split, decoded) matches, else undefined. */
export function matchRoute(segments: Segment[], parts: string[]): Record<string, string> | undefined {
  const params: Record<string, string> = {};
  let i = 0;
  for (const seg of segments) {
    if (seg.catchAll) {
      if (i < parts.length) params[seg.param!] = parts.slice(i).join("/");
      return params;
    }
    const part = parts[i];
    if (part === undefined) {
      if (seg.optional) continue;
      return undefined;
    }
    if (seg.literal !== undefined) {
      if (part.toLowerCase() !== seg.literal) return undefined;
    } else {
      params[seg.param!] = part;
    }
    i++;
  }
  return i === parts.length ? params : undefined;
}

/** Literal segments outrank parameters, as in ASP.NET routing: `disks/new` wins over `disks/{id}`. */
function specificity(route: Route): number[] {
  return route.segments.map((s) => (s.literal !== undefined ? 0 : s.catchAll ? 2 : 1));
}

function compare(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 3) - (b[i] ?? 3);
    if (d) return d;
  }
  return 0;
}

export class HttpHost {
  private readonly routes: Route[];
  private server?: http.Server;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    specs: HttpFunctionSpec[],
    private readonly log: HostLogger,
    private readonly maxBodyBytes = MAX_BODY_BYTES,
  ) {
    this.routes = specs
      .map((spec) => ({ spec, segments: parseRoute(spec.route) }))
      .sort((a, b) => compare(specificity(a), specificity(b)));
  }

  /** Listens on 127.0.0.1 only: locally there are no function keys, so nothing else may reach it. Port 0 picks a free one. */
  async start(port: number): Promise<number> {
    const server = http.createServer((req, res) => {
      const work = this.handle(req, res).catch((err: unknown) => {
        this.log.error(`http ${req.method} ${req.url}: ${errorText(err)}`);
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
      this.inFlight.add(work);
      void work.finally(() => this.inFlight.delete(work));
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          err.code === "EADDRINUSE"
            ? new Error(`port ${port} is in use; set DISKDELTA_HTTP_PORT to another port`)
            : err,
        ),
      );
      server.listen(port, "127.0.0.1", () => resolve());
    });
    return (server.address() as AddressInfo).port;
  }

  /** Accepts no new connections, answers requests already received, then closes idle keep-alives. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
    server.closeIdleConnections();
    await closed;
    this.server = undefined;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", `http://${req.headers.host ?? "127.0.0.1"}`);
    const method = (req.method ?? "GET").toUpperCase();
    const parts = url.pathname
      .split("/")
      .filter(Boolean)
      .map((p) => {
        try {
          return decodeURIComponent(p);
        } catch {
          return p;
        }
      });
    if (parts[0]?.toLowerCase() !== "api")
      return this.plain(res, 404, { error: `no function at ${url.pathname}` });
    const matches = this.routes
      .map((route) => ({ route, params: matchRoute(route.segments, parts.slice(1)) }))
      .filter((m) => m.params !== undefined);
    if (matches.length === 0) return this.plain(res, 404, { error: `no function at ${url.pathname}` });
    const match = matches.find((m) => (m.route.spec.methods as string[]).includes(method));
    if (!match) {
      const allow = [...new Set(matches.flatMap((m) => m.route.spec.methods))].join(", ");
      return this.plain(
        res,
        405,
        { error: `${method} is not allowed on ${url.pathname}; use ${allow}` },
        { allow },
      );
    }
    const body = await this.readBody(req);
    if (body === "too large") {
      req.resume();
      return this.plain(
        res,
        413,
        { error: `the request body is larger than ${this.maxBodyBytes} bytes` },
        { connection: "close" },
      );
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : value;
    }
    const spec = match.route.spec;
    const request = new HttpRequest({
      method,
      url: url.toString(),
      headers,
      query: Object.fromEntries(url.searchParams),
      params: match.params,
      // GET and HEAD carry no body (the native Request refuses one).
      body: method === "GET" || method === "HEAD" || body.length === 0 ? undefined : { bytes: body },
    });
    const context = newContext(spec.name, this.log, {
      triggerMetadata: { Query: Object.fromEntries(url.searchParams), Headers: headers },
      options: {
        trigger: { type: "httpTrigger", name: "request", route: spec.route, methods: spec.methods },
      },
    });
    let result: HttpResponseInit | HttpResponse;
    try {
      result = await spec.handler(request, context);
    } catch (err) {
      context.error(`failed: ${errorText(err)}`);
      return this.plain(res, 500, { error: "the function failed; see the host's log" });
    }
    const response = result instanceof HttpResponse ? result : new HttpResponse(result ?? {});
    const bytes = Buffer.from(await response.arrayBuffer());
    const out: http.OutgoingHttpHeaders = {};
    response.headers.forEach((value, name) => (out[name] = value));
    const cookies = response.cookies.map((c) => `${c.name}=${c.value}${c.path ? `; Path=${c.path}` : ""}`);
    if (cookies.length) out["set-cookie"] = cookies;
    res.writeHead(response.status, out);
    res.end(method === "HEAD" ? undefined : bytes);
    this.log.debug?.(`${method} ${url.pathname} → ${response.status} (${spec.name})`);
  }

  private plain(
    res: http.ServerResponse,
    status: number,
    json: object,
    headers: http.OutgoingHttpHeaders = {},
  ): void {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(json));
  }

  private readBody(req: http.IncomingMessage): Promise<Buffer | "too large"> {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > this.maxBodyBytes) return Promise.resolve("too large");
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > this.maxBodyBytes) {
          req.removeAllListeners("data");
          req.resume();
          resolve("too large");
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
    });
  }
}
