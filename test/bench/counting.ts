/**
 * Counting storage requests by kind, as the service would bill and throttle them. Blob requests
 * are recorded by the diff fixture (test/fixtures/diffProxy.ts, which both contenders go through
 * and which also answers their diffs); table and queue requests go through the small counting
 * proxy below. A request is classified from what the client sent (method, path, query, headers),
 * never from the answer, so a refused request still counts: it cost a round trip.
 */
import http from "node:http";
import { pipeline } from "node:stream";
import { isDiffRequest, isGetBlob, isPutPage, type ProxyRequestInfo } from "../fixtures/diffProxy";

/** The kinds, in the order the bench prints them. */
export const KINDS = [
  "blob: list ranges",
  "blob: diff",
  "blob: get",
  "blob: put page",
  "blob: put page from url",
  "blob: clear",
  "blob: snapshot",
  "blob: properties",
  "blob: list blobs",
  "blob: block blob ops",
  "blob: other",
  "table: reads",
  "table: writes",
  "table: queries",
  "queue",
] as const;
export type Kind = (typeof KINDS)[number];

/**
 * Requests by kind, and the bytes named by the kinds that move data: Put Page (written), Put Page
 * From URL (kept apart: Azurite refuses every one with 501, so on Azurite those bytes are never
 * written; the engine then streams the same range by Put Page), clear, and Get Blob (read).
 */
export interface Counts {
  requests: Partial<Record<Kind, number>>;
  bytes: Bytes;
}
export interface Bytes {
  written: number;
  fromUrl: number;
  cleared: number;
  read: number;
}
const BYTE_KINDS = ["written", "fromUrl", "cleared", "read"] as const;

export function emptyCounts(): Counts {
  return { requests: {}, bytes: { written: 0, fromUrl: 0, cleared: 0, read: 0 } };
}

export function totalRequests(c: Counts, filter: (k: Kind) => boolean = () => true): number {
  return KINDS.filter(filter).reduce((sum, k) => sum + (c.requests[k] ?? 0), 0);
}

/** Listing calls: what the "plus the listing calls it needs" allows on top of 16. */
export const isListing = (k: Kind) => k === "blob: list ranges" || k === "blob: diff";

/** b − a, kind by kind: the requests between two marks of cumulative counts. */
export function since(a: Counts, b: Counts): Counts {
  const out = emptyCounts();
  for (const k of KINDS) {
    const n = (b.requests[k] ?? 0) - (a.requests[k] ?? 0);
    if (n) out.requests[k] = n;
  }
  for (const k of BYTE_KINDS) out.bytes[k] = b.bytes[k] - a.bytes[k];
  return out;
}

export function add(a: Counts, b: Counts): Counts {
  const out = emptyCounts();
  for (const k of KINDS) {
    const n = (a.requests[k] ?? 0) + (b.requests[k] ?? 0);
    if (n) out.requests[k] = n;
  }
  for (const k of BYTE_KINDS) out.bytes[k] = a.bytes[k] + b.bytes[k];
  return out;
}

function header(info: ProxyRequestInfo, name: string): string | undefined {
  const v = info.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Bytes named by a Range / x-ms-range header `bytes=a-b` (inclusive); 0 when absent or open-ended. */
function rangeBytes(info: ProxyRequestInfo): number {
  const m = /^bytes=(\d+)-(\d+)$/.exec((header(info, "x-ms-range") ?? header(info, "range") ?? "").trim());
  return m ? Number(m[2]) - Number(m[1]) + 1 : 0;
}

/**
 * The kind of one blob request. The engine's only block blobs are the per-point digests, named
 * `<backupBlob>.digests/<point>` (lib/restore/verify.ts), so a request on such a path is a block
 * blob op whatever its verb; the bench creates no other block blobs.
 */
export function blobKind(info: ProxyRequestInfo): Kind {
  const comp = info.query.get("comp");
  if (isDiffRequest(info)) return "blob: diff";
  if (info.method === "GET" && comp === "pagelist") return "blob: list ranges";
  if (
    comp === "block" ||
    comp === "blocklist" ||
    header(info, "x-ms-blob-type") === "BlockBlob" ||
    /\.digests\//.test(decodeURIComponent(info.path))
  ) {
    return "blob: block blob ops";
  }
  if (isPutPage(info)) {
    if (header(info, "x-ms-page-write") === "clear") return "blob: clear";
    return header(info, "x-ms-copy-source") !== undefined ? "blob: put page from url" : "blob: put page";
  }
  if (info.method === "PUT" && comp === "snapshot") return "blob: snapshot";
  if (info.method === "GET" && comp === "list") return "blob: list blobs";
  if (isGetBlob(info)) return "blob: get";
  const onBlob = !info.query.has("restype");
  if (onBlob && (info.method === "HEAD" || comp === "properties" || comp === "metadata")) {
    return "blob: properties";
  }
  return "blob: other";
}

export function countBlob(c: Counts, info: ProxyRequestInfo): void {
  const kind = blobKind(info);
  c.requests[kind] = (c.requests[kind] ?? 0) + 1;
  if (kind === "blob: put page") c.bytes.written += rangeBytes(info);
  else if (kind === "blob: put page from url") c.bytes.fromUrl += rangeBytes(info);
  else if (kind === "blob: clear") c.bytes.cleared += rangeBytes(info);
  else if (kind === "blob: get") c.bytes.read += rangeBytes(info);
}

/**
 * Table requests: a GET naming one entity by its keys is a point read, any other GET a query
 * (listing entities or tables); everything else writes (insert, update, merge, delete, a batch
 * transaction, creating a table).
 */
export function tableKind(method: string, path: string): Kind {
  if (method !== "GET") return "table: writes";
  return /\(PartitionKey=/.test(decodeURIComponent(path)) ? "table: reads" : "table: queries";
}

/** Connection-level headers: each side sets its own. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
]);

function forwardable(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

export interface CountingProxy {
  /** `http://127.0.0.1:<port>`, path-style like Azurite: `${url}/<account>`. */
  url: string;
  close(): Promise<void>;
}

/**
 * A streaming HTTP proxy to `target` that calls `count(method, path)` for every request it
 * receives and changes nothing: method, path, query, headers and bodies pass both ways as they
 * are (shared-key signatures cover the path, which stays the same).
 */
export async function startCountingProxy(
  target: string,
  count: (method: string, path: string) => void,
): Promise<CountingProxy> {
  const to = new URL(target);
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    count(req.method ?? "GET", (req.url ?? "/").split("?")[0]);
    const upstream = http.request(
      {
        hostname: to.hostname,
        port: to.port,
        method: req.method,
        path: req.url,
        headers: forwardable(req.headers),
        agent,
      },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, forwardable(upRes.headers));
        pipeline(upRes, res, () => undefined);
      },
    );
    upstream.on("error", (err) => {
      if (res.headersSent) res.destroy(err);
      else res.writeHead(502).end(`counting proxy: ${err.message}`);
    });
    pipeline(req, upstream, () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("counting proxy: no TCP address");
  return {
    url: `http://127.0.0.1:${address.port}`,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      agent.destroy();
    },
  };
}
