/**
 * The storage port over the Azure Storage SDK (@azure/storage-blob 12): the one place in lib that
 * imports it. Guarantees beyond the port's:
 *
 * - every request has a deadline for its response headers (DISKDELTA_REQUEST_TIMEOUT_SECONDS) and
 *   every download a stall timeout for its body (DISKDELTA_BODY_STALL_SECONDS); a stalled body, a
 *   body cut short by a clean close (FIN) and a body with a wrong range MD5 are retryable errors,
 *   exactly like a 503, and name the operation, blob and range;
 * - SDK retries are off (retrying.ts is the one policy), and the SDK's retrying body stream is not
 *   used: a download is one request, read here under the watchdog;
 * - credentials: shared keys where configured, else the identity, and only for accepted hosts;
 *   server-side copies read their source through a read-only SAS for one snapshot (an hour) or a
 *   bearer token; a SAS address (managed disks) is used as given and never printed.
 */
import crypto from "node:crypto";
import {
  AnonymousCredential,
  BlobSASPermissions,
  BlobServiceClient,
  generateBlobSASQueryParameters,
  PageBlobClient,
  type BlockBlobClient,
  type StoragePipelineOptions,
} from "@azure/storage-blob";
import { STORAGE_SCOPE, type AzureCredentials } from "../azure/credentials";
import { bufferMd5, hashAndRemember } from "../core/md5";
import { errorInfo } from "../core/retry";
import { fromInclusive, normalize, WINDOW_SIZE, type PageRange } from "../ranges";
import { StorageError } from "./errors";
import {
  describeAddress,
  type BlobAddress,
  type Block,
  type BlobProperties,
  type DiffBase,
  type ListOptions,
  type PageAddress,
  type PageStore,
  type RangePage,
  type SnapshotInfo,
  type WriteConditions,
} from "./port";
import { hostProblem, type BlobLocation } from "./urls";

export interface AzureStoreOptions {
  requestTimeoutMs: number;
  bodyStallMs: number;
}

/** How long a source credential for Put Page From URL lives: one chunk takes seconds; an hour covers retries and slow runs without leaving a long-lived secret. */
const SOURCE_SAS_MINUTES = 60;
/** A fresh source credential is made when the current one is this old. */
const SOURCE_AUTH_REFRESH_MS = 20 * 60_000;

function span(range: PageRange): string {
  return `bytes [${range.start}, ${range.end})`;
}

/** Removes query strings from a message, so a SAS the SDK echoed can never be shown. */
function scrub(text: string): string {
  return text.replace(/\?[^\s"'<>]*/g, "?…");
}

/** The SDK error (or network error) of a failed call, as a StorageError naming what failed. */
export function toStorageError(op: string, target: string, err: unknown): StorageError {
  if (err instanceof StorageError) return err;
  const { status, code, message } = errorInfo(err);
  const name = (err as Error | undefined)?.name;
  if (name === "AbortError" && status === undefined) {
    return new StorageError(
      op,
      target,
      undefined,
      "HeadersTimedOut",
      "no answer before the request deadline",
      true,
    );
  }
  // Storage error messages are "<text>\nRequestId:…"; only the text is worth showing.
  return new StorageError(op, target, status, code, scrub(message.replace(/\s*RequestId:.*$/s, "")));
}

/** How a page-blob endpoint refuses the Content-MD5 header (not a mismatch: Md5Mismatch is a corrupted body). */
const MD5_REFUSALS = new Set(["UnsupportedHeader", "InvalidHeaderValue", "Md5NotSupported"]);

/**
 * Checks a body against the range MD5 the service sent (when it sent one). A mismatch was
 * corrupted in transit: retryable, a retry reads it again.
 */
function checkRangeMd5(contentMD5: Uint8Array | undefined, body: Buffer, target: string): void {
  if (!contentMD5) return;
  // Remembered for the buffer: writing it on (a streamed copy) and digesting it do not hash it again.
  const md5 = hashAndRemember(body);
  if (!Buffer.from(contentMD5).equals(md5))
    throw new StorageError(
      "read",
      target,
      undefined,
      "Md5Mismatch",
      "the bytes do not match the range MD5 the service sent",
      true,
    );
}

/**
 * Memory for read bodies, reused: a streamed copy reads a 4 MiB body, writes it and drops it, and
 * a dropped body is only freed when the garbage collector next runs, which V8 schedules by how
 * much external memory has grown, so tens of MiB of dead bodies pile up between collections. A
 * caller that promises to hand a body back (a `pooled` read: the copier, which drops each body as
 * soon as its write is done) is lent a 4 MiB slab; `release` puts it on a short free list and the
 * next pooled read fills it, so a copy holds about concurrency × 4 MiB whatever the disk (the
 * seal's digests read the same way). Reads that keep bodies a while (restores, verify) are not
 * pooled. Each read gets a new Buffer object over its slab (remembered MD5s are keyed by that
 * object, so an MD5 never outlives the bytes it was computed from); a body is taken back once, and
 * only if this pool lent it. A failed read's slab is never reused: a late piece of its stream could
 * still land in it.
 */
class BodyPool {
  private readonly free: Buffer[] = [];
  private readonly slabs = new WeakMap<Buffer, Buffer>();

  constructor(private readonly keep: number) {}

  take(count: number): Buffer {
    if (count < POOLED_MIN || count > WINDOW_SIZE) return Buffer.allocUnsafe(count);
    const slab = this.free.pop() ?? Buffer.allocUnsafeSlow(WINDOW_SIZE);
    const body = Buffer.from(slab.buffer, slab.byteOffset, count);
    this.slabs.set(body, slab);
    return body;
  }

  give(body: Buffer): void {
    const slab = this.slabs.get(body);
    if (!slab) return;
    this.slabs.delete(body);
    if (this.free.length < this.keep) this.free.push(slab);
  }

  /** A body that must not be reused (its read failed). */
  forget(body: Buffer): void {
    this.slabs.delete(body);
  }
}

/** Bodies smaller than this are not pooled: a 4 MiB slab for a few pages would waste more than their garbage costs. */
const POOLED_MIN = 64 * 1024;
/** Free slabs kept (the default copy concurrency): at most 32 MiB held between runs. */
const POOL_KEEP = 8;

export class AzureStore implements PageStore {
  private readonly services = new Map<string, BlobServiceClient>();
  /** SAS hosts (managed-disk uploads) that refused Content-MD5 on a write. */
  private readonly noMd5Hosts = new Set<string>();
  private readonly bodies = new BodyPool(POOL_KEEP);
  private readonly sourceAuth = new Map<
    string,
    { at: number; value: Promise<{ url: string; bearer?: string }> }
  >();

  constructor(
    private readonly credentials: AzureCredentials,
    private readonly options: AzureStoreOptions,
  ) {}

  private pipelineOptions(): StoragePipelineOptions {
    return { retryOptions: { maxTries: 1 }, keepAliveOptions: { enable: true } };
  }

  private service(loc: BlobLocation): BlobServiceClient {
    let svc = this.services.get(loc.serviceUrl);
    if (!svc) {
      const host = new URL(loc.serviceUrl).hostname;
      const key = this.credentials.sharedKey(loc.account);
      if (!key) {
        // Defence in depth: URLs are checked when registered, but no token may leave for an unaccepted host.
        const problem = hostProblem(host, loc.account, this.credentials, new URL(loc.serviceUrl).protocol);
        if (problem) throw new StorageError("connect", loc.serviceUrl, undefined, "HostNotAllowed", problem);
      }
      svc = new BlobServiceClient(loc.serviceUrl, key ?? this.credentials.identity(), this.pipelineOptions());
      this.services.set(loc.serviceUrl, svc);
    }
    return svc;
  }

  private pageBlob(a: PageAddress): PageBlobClient {
    if (a.kind === "sas")
      return new PageBlobClient(a.url.reveal(), new AnonymousCredential(), this.pipelineOptions());
    const client = this.service(a.location)
      .getContainerClient(a.location.container)
      .getPageBlobClient(a.location.blob);
    return a.snapshot ? client.withSnapshot(a.snapshot) : client;
  }

  private blockBlob(loc: BlobLocation): BlockBlobClient {
    return this.service(loc).getContainerClient(loc.container).getBlockBlobClient(loc.blob);
  }

  /** Runs one request under the header deadline; failures become StorageErrors naming `op` and `target`. */
  private async call<T>(op: string, target: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.options.requestTimeoutMs);
    timer.unref();
    try {
      return await work(controller.signal);
    } catch (err) {
      throw toStorageError(op, target, err);
    } finally {
      clearTimeout(timer);
    }
  }

  async properties(a: PageAddress): Promise<BlobProperties | undefined> {
    try {
      const p = await this.call("get properties of", describeAddress(a), (abortSignal) =>
        this.pageBlob(a).getProperties({ abortSignal }),
      );
      return {
        size: p.contentLength ?? 0,
        blobType: p.blobType,
        sequenceNumber: p.blobSequenceNumber ?? 0,
        metadata: p.metadata ?? {},
        leased: p.leaseState === "leased",
        server: p._response.headers.get("server"),
      };
    } catch (err) {
      if ((err as StorageError).statusCode === 404) return undefined;
      throw err;
    }
  }

  async ensureContainer(location: BlobLocation): Promise<void> {
    const container = this.service(location).getContainerClient(location.container);
    await this.call("create container", `${location.serviceUrl}/${location.container}`, (abortSignal) =>
      container.createIfNotExists({ abortSignal }),
    );
  }

  async create(
    a: PageAddress,
    size: number,
    options: { ifNotExists?: boolean; metadata?: Record<string, string> } = {},
  ): Promise<void> {
    await this.call("create", describeAddress(a), (abortSignal) =>
      this.pageBlob(a).create(size, {
        abortSignal,
        metadata: options.metadata,
        conditions: options.ifNotExists ? { ifNoneMatch: "*" } : undefined,
      }),
    );
  }

  async resize(a: PageAddress, size: number): Promise<void> {
    await this.call(`resize to ${size} bytes`, describeAddress(a), (abortSignal) =>
      this.pageBlob(a).resize(size, { abortSignal }),
    );
  }

  async setSequenceNumber(a: BlobAddress, value: number): Promise<void> {
    await this.call("set the sequence number of", describeAddress(a), (abortSignal) =>
      this.pageBlob(a).updateSequenceNumber("update", value, { abortSignal }),
    );
  }

  async delete(a: BlobAddress): Promise<boolean> {
    try {
      await this.call("delete", describeAddress(a), (abortSignal) =>
        this.pageBlob(a).delete(a.snapshot ? { abortSignal } : { abortSignal, deleteSnapshots: "include" }),
      );
      return true;
    } catch (err) {
      if ((err as StorageError).statusCode === 404) return false;
      throw err;
    }
  }

  async snapshot(a: BlobAddress, metadata: Record<string, string>): Promise<string> {
    const created = await this.call("snapshot", describeAddress(a), (abortSignal) =>
      this.pageBlob(a).createSnapshot({ abortSignal, metadata }),
    );
    if (!created.snapshot)
      throw new StorageError(
        "snapshot",
        describeAddress(a),
        undefined,
        undefined,
        "the service returned no snapshot id",
      );
    return created.snapshot;
  }

  async listSnapshots(location: BlobLocation): Promise<SnapshotInfo[]> {
    const container = this.service(location).getContainerClient(location.container);
    return this.call("list the snapshots of", location.url, async (abortSignal) => {
      const found: SnapshotInfo[] = [];
      for await (const item of container.listBlobsFlat({
        prefix: location.blob,
        includeSnapshots: true,
        includeMetadata: true,
        abortSignal,
      })) {
        if (item.name === location.blob && item.snapshot)
          found.push({ snapshot: item.snapshot, metadata: item.metadata ?? {} });
      }
      return found;
    });
  }

  private async rangePage(
    op: string,
    a: PageAddress,
    range: PageRange,
    open: (signal: AbortSignal) => AsyncIterableIterator<{
      pageRange?: { start: number; end: number }[];
      clearRange?: { start: number; end: number }[];
      continuationToken?: string;
      _response: { headers: { get(name: string): string | undefined } };
    }>,
  ): Promise<RangePage> {
    const page = await this.call(op, `${describeAddress(a)} ${span(range)}`, async (signal) => {
      const result = await open(signal).next();
      return result.done ? undefined : result.value;
    });
    if (!page) return { ranges: [], clears: [] };
    const clip = (list: { start: number; end: number }[] | undefined) =>
      normalize(
        (list ?? [])
          .map(fromInclusive)
          .map((r) => ({ start: Math.max(r.start, range.start), end: Math.min(r.end, range.end) }))
          .filter((r) => r.start < r.end),
      );
    return {
      ranges: clip(page.pageRange),
      clears: clip(page.clearRange),
      next: page.continuationToken || undefined,
      server: page._response.headers.get("server"),
    };
  }

  listRanges(a: PageAddress, range: PageRange, options: ListOptions = {}): Promise<RangePage> {
    const blob = this.pageBlob(a);
    return this.rangePage("list the page ranges of", a, range, (abortSignal) =>
      blob
        .listPageRanges(range.start, range.end - range.start, { abortSignal })
        .byPage({ continuationToken: options.marker, maxPageSize: options.maxResults }),
    );
  }

  listDiff(a: PageAddress, range: PageRange, base: DiffBase, options: ListOptions = {}): Promise<RangePage> {
    const blob = this.pageBlob(a);
    if ("previousUrl" in base) return this.managedDiff(a, blob, range, base.previousUrl.reveal());
    return this.rangePage("list the page-range diff of", a, range, (abortSignal) =>
      blob
        .listPageRangesDiff(range.start, range.end - range.start, base.snapshot, { abortSignal })
        .byPage({ continuationToken: options.marker, maxPageSize: options.maxResults }),
    );
  }

  /**
   * The diff of a managed disk's snapshot against an earlier one (x-ms-previous-snapshot-url). The
   * SDK sends no continuation marker with this form, so an answer that says it has more is taken
   * as "too much for one call": the span is halved and each half asked again (down to one window).
   */
  private async managedDiff(
    a: PageAddress,
    blob: PageBlobClient,
    range: PageRange,
    previousUrl: string,
  ): Promise<RangePage> {
    const response = await this.call(
      "list the page-range diff of",
      `${describeAddress(a)} ${span(range)}`,
      (abortSignal) =>
        blob.getPageRangesDiffForManagedDisks(range.start, range.end - range.start, previousUrl, {
          abortSignal,
        }),
    );
    const more = (response as { continuationToken?: string }).continuationToken;
    if (more && range.end - range.start > WINDOW_SIZE) {
      const mid =
        range.start +
        Math.max(WINDOW_SIZE, Math.floor((range.end - range.start) / 2 / WINDOW_SIZE) * WINDOW_SIZE);
      const [left, right] = [
        await this.managedDiff(a, blob, { start: range.start, end: mid }, previousUrl),
        await this.managedDiff(a, blob, { start: mid, end: range.end }, previousUrl),
      ];
      return {
        ranges: [...left.ranges, ...right.ranges],
        clears: [...left.clears, ...right.clears],
        server: left.server,
      };
    }
    // The SDK reports each range as {offset, count} with count = End - Start of the service's
    // inclusive range: one byte short of its length.
    const clip = (list: Array<{ offset: number; count?: number }> | undefined) =>
      normalize(
        (list ?? [])
          .map((r) => ({
            start: Math.max(r.offset, range.start),
            end: Math.min(r.offset + (r.count ?? 0) + 1, range.end),
          }))
          .filter((r) => r.start < r.end),
      );
    return {
      ranges: clip(response.pageRange),
      clears: clip(response.clearRange),
      server: response._response.headers.get("server"),
    };
  }

  async read(a: PageAddress, range: PageRange, options?: { pooled?: boolean }): Promise<Buffer> {
    const count = range.end - range.start;
    const target = `${describeAddress(a)} ${span(range)}`;
    if (count > WINDOW_SIZE) throw new Error(`read of ${target}: more than 4 MiB in one read`);
    if (count === 0) return Buffer.alloc(0);
    const response = await this.call("read", target, (abortSignal) =>
      this.pageBlob(a).download(range.start, count, {
        abortSignal,
        rangeGetContentMD5: true,
        maxRetryRequests: 0,
      }),
    );
    const body = await this.readBody(response.readableStreamBody, count, "read", target, options?.pooled);
    checkRangeMd5(response.contentMD5, body, target);
    return body;
  }

  release(data: Buffer): void {
    this.bodies.give(data);
  }

  /** Reads exactly `count` bytes under the stall watchdog; a stall, an early end or extra bytes are retryable errors. */
  private readBody(
    stream: NodeJS.ReadableStream | undefined,
    count: number,
    op: string,
    target: string,
    pooled = false,
  ): Promise<Buffer> {
    if (!stream)
      return Promise.reject(
        new StorageError(op, target, undefined, "BodyCut", "the response had no body", true),
      );
    const readable = stream as NodeJS.ReadableStream & { destroy(error?: Error): void };
    const buffer = pooled ? this.bodies.take(count) : Buffer.allocUnsafe(count);
    let offset = 0;
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        readable.removeAllListeners("data");
        if (err) {
          readable.destroy();
          this.bodies.forget(buffer);
          reject(err);
        } else resolve(buffer);
      };
      const stall = () =>
        finish(
          new StorageError(
            op,
            target,
            undefined,
            "BodyStalled",
            `the body stopped after ${offset} of ${count} bytes for ${this.options.bodyStallMs / 1000} s`,
            true,
          ),
        );
      let timer = setTimeout(stall, this.options.bodyStallMs);
      timer.unref();
      readable.on("data", (piece: Buffer) => {
        clearTimeout(timer);
        timer = setTimeout(stall, this.options.bodyStallMs);
        timer.unref();
        if (offset + piece.length > count)
          return finish(
            new StorageError(op, target, undefined, "BodyCut", "the body is longer than asked", true),
          );
        piece.copy(buffer, offset);
        offset += piece.length;
      });
      readable.once("end", () =>
        offset === count
          ? finish()
          : finish(
              new StorageError(
                op,
                target,
                undefined,
                "BodyCut",
                `the body ended after ${offset} of ${count} bytes`,
                true,
              ),
            ),
      );
      readable.once("error", (err: Error) =>
        finish(
          new StorageError(
            op,
            target,
            undefined,
            "BodyCut",
            `the body broke after ${offset} of ${count} bytes (${errorInfo(err).code ?? err.message})`,
            true,
          ),
        ),
      );
      readable.once("close", () => {
        if (offset !== count)
          finish(
            new StorageError(
              op,
              target,
              undefined,
              "BodyCut",
              `the connection closed after ${offset} of ${count} bytes`,
              true,
            ),
          );
      });
    });
  }

  async write(a: PageAddress, offset: number, data: Buffer, conditions: WriteConditions = {}): Promise<void> {
    const host = a.kind === "sas" ? new URL(a.url.reveal()).host : undefined;
    const withMd5 = host === undefined || !this.noMd5Hosts.has(host);
    const send = (md5: boolean) =>
      this.call(
        "write",
        `${describeAddress(a)} ${span({ start: offset, end: offset + data.length })}`,
        (abortSignal) =>
          this.pageBlob(a).uploadPages(data, offset, data.length, {
            abortSignal,
            transactionalContentMD5: md5 ? bufferMd5(data) : undefined,
            conditions:
              conditions.fence === undefined ? undefined : { ifSequenceNumberEqualTo: conditions.fence },
          }),
      );
    try {
      await send(withMd5);
    } catch (err) {
      // Managed-disk upload endpoints (md-impexp-…) have a restricted API and are known to refuse
      // Content-MD5 (AzCopy refuses to send one there). A refusal of the header itself — never a
      // mismatch, which is a corrupted body — makes this host's writes go without it; what the
      // restore writes there was checked against the point's digests before it was sent.
      const { status, code } = errorInfo(err);
      if (!host || !withMd5 || status !== 400 || !MD5_REFUSALS.has(code ?? "")) throw err;
      this.noMd5Hosts.add(host);
      await send(false);
    }
  }

  async writeFrom(
    a: PageAddress,
    offset: number,
    source: PageAddress,
    length: number,
    conditions: WriteConditions = {},
  ): Promise<void> {
    const auth = await this.authorizeSource(source);
    await this.call(
      "copy into",
      `${describeAddress(a)} ${span({ start: offset, end: offset + length })} from ${describeAddress(source)}`,
      (abortSignal) =>
        this.pageBlob(a).uploadPagesFromURL(auth.url, offset, offset, length, {
          abortSignal,
          sourceAuthorization: auth.bearer ? { scheme: "Bearer", value: auth.bearer } : undefined,
          conditions:
            conditions.fence === undefined ? undefined : { ifSequenceNumberEqualTo: conditions.fence },
        }),
    );
  }

  /** Read access to one snapshot for a server-side copy, never broader than that blob, never long-lived. */
  private authorizeSource(source: PageAddress): Promise<{ url: string; bearer?: string }> {
    if (source.kind === "sas") return Promise.resolve({ url: source.url.reveal() });
    const cacheKey = `${source.location.url}@${source.snapshot ?? ""}`;
    const cached = this.sourceAuth.get(cacheKey);
    if (cached && Date.now() - cached.at < SOURCE_AUTH_REFRESH_MS) return cached.value;
    const value = this.makeSourceAuth(source);
    this.sourceAuth.set(cacheKey, { at: Date.now(), value });
    value.catch(() => this.sourceAuth.delete(cacheKey));
    return value;
  }

  private async makeSourceAuth(source: BlobAddress): Promise<{ url: string; bearer?: string }> {
    const loc = source.location;
    const url = this.pageBlob(source).url;
    const key = this.credentials.sharedKey(loc.account);
    if (key) {
      const sas = generateBlobSASQueryParameters(
        {
          containerName: loc.container,
          blobName: loc.blob,
          snapshotTime: source.snapshot,
          permissions: BlobSASPermissions.parse("r"),
          startsOn: new Date(Date.now() - 5 * 60_000),
          expiresOn: new Date(Date.now() + SOURCE_SAS_MINUTES * 60_000),
        },
        key,
      ).toString();
      return { url: `${url}${url.includes("?") ? "&" : "?"}${sas}` };
    }
    const token = await this.credentials.identity().getToken(STORAGE_SCOPE);
    if (!token)
      throw new StorageError("authorize", loc.url, undefined, undefined, "could not get a token to read it");
    return { url, bearer: token.token };
  }

  async clear(a: PageAddress, range: PageRange, conditions: WriteConditions = {}): Promise<void> {
    await this.call("clear", `${describeAddress(a)} ${span(range)}`, (abortSignal) =>
      this.pageBlob(a).clearPages(range.start, range.end - range.start, {
        abortSignal,
        conditions:
          conditions.fence === undefined ? undefined : { ifSequenceNumberEqualTo: conditions.fence },
      }),
    );
  }

  async putBlock(location: BlobLocation, id: string, data: Buffer): Promise<void> {
    const md5 = crypto.createHash("md5").update(data).digest();
    await this.call("stage a block of", location.url, (abortSignal) =>
      this.blockBlob(location).stageBlock(id, data, data.length, {
        abortSignal,
        transactionalContentMD5: md5,
      }),
    );
  }

  async commitBlocks(location: BlobLocation, ids: string[], metadata: Record<string, string>): Promise<void> {
    await this.call("commit the blocks of", location.url, (abortSignal) =>
      this.blockBlob(location).commitBlockList(ids, { abortSignal, metadata }),
    );
  }

  async blocks(
    location: BlobLocation,
  ): Promise<{ blocks: Block[]; metadata: Record<string, string> } | undefined> {
    const blob = this.blockBlob(location);
    try {
      const props = await this.call("get properties of", location.url, (abortSignal) =>
        blob.getProperties({ abortSignal }),
      );
      const list = await this.call("list the blocks of", location.url, (abortSignal) =>
        blob.getBlockList("committed", { abortSignal }),
      );
      return {
        blocks: (list.committedBlocks ?? []).map((b) => ({ id: b.name, size: b.size })),
        metadata: props.metadata ?? {},
      };
    } catch (err) {
      if ((err as StorageError).statusCode === 404) return undefined;
      throw err;
    }
  }

  async readBlob(location: BlobLocation, offset: number, count: number): Promise<Buffer> {
    const target = `${location.url} bytes [${offset}, ${offset + count})`;
    if (count === 0) return Buffer.alloc(0);
    // The service's MD5 of the range (it sends one up to 4 MiB): digest blocks are checked in transit like pages.
    const response = await this.call("read", target, (abortSignal) =>
      this.blockBlob(location).download(offset, count, {
        abortSignal,
        maxRetryRequests: 0,
        rangeGetContentMD5: count <= WINDOW_SIZE,
      }),
    );
    const body = await this.readBody(response.readableStreamBody, count, "read", target);
    checkRangeMd5(response.contentMD5, body, target);
    return body;
  }
}
