/**
 * The diff proxy against the shared Azurite, through @azure/storage-blob exactly as the engine calls it:
 * correct PageRange/ClearRange lists where Azurite alone returns the current ranges, paging by
 * continuation token, segment restriction, Azure's refusals, injected faults as the SDK surfaces
 * them (with and without its own retries), and byte-exact pass-through of everything else. Managed-disk
 * URLs (`mapManaged`): aliases served as the blob or snapshot they stand for with Azurite judging
 * their SAS, the `x-ms-previous-snapshot-url` diff between two incremental snapshots of one blob, and
 * its refusals.
 */
import crypto from "node:crypto";
import {
  AnonymousCredential,
  BlobServiceClient,
  PageBlobClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type PageBlobGetPageRangesDiffResponseModel,
  type StoragePipelineOptions,
} from "@azure/storage-blob";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";
import {
  isDiffRequest,
  isGetBlob,
  isPutPage,
  startDiffProxy,
  type DiffProxy,
  type ManagedBlob,
  type ProxyRequestInfo,
} from "../fixtures/diffProxy";

const PAGE = 512;
const MiB = 1024 * 1024;

let proxy: DiffProxy;
let direct: BlobServiceClient; // setup goes straight to Azurite, so the proxy's log holds only what a test asks
let viaProxy: BlobServiceClient;
let viaProxyNoRetry: BlobServiceClient;

function service(url: string, pipeline?: StoragePipelineOptions): BlobServiceClient {
  const s = testStorage();
  return new BlobServiceClient(
    url,
    new StorageSharedKeyCredential(SOURCE_ACCOUNT, s.keys[SOURCE_ACCOUNT]),
    pipeline,
  );
}

beforeAll(async () => {
  const s = testStorage();
  proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  direct = service(s.blobUrl(SOURCE_ACCOUNT));
  viaProxy = service(proxy.blobUrl(SOURCE_ACCOUNT));
  viaProxyNoRetry = service(proxy.blobUrl(SOURCE_ACCOUNT), { retryOptions: { maxTries: 1 } });
});

afterAll(async () => {
  await proxy.close();
});

afterEach(() => {
  proxy.clearFaults();
  proxy.pageSize = 10_000;
});

/** Bytes of `pages` pages, every byte `fill`. */
function pages(count: number, fill: number): Buffer {
  return Buffer.alloc(count * PAGE, fill);
}

async function newDisk(
  pageCount: number,
): Promise<{ name: string; container: string; disk: PageBlobClient }> {
  const container = uniqueName("diffproxy");
  await direct.getContainerClient(container).create();
  const name = uniqueName("disk");
  const disk = direct.getContainerClient(container).getPageBlobClient(name);
  await disk.create(pageCount * PAGE);
  return { name, container, disk };
}

async function write(disk: PageBlobClient, firstPage: number, data: Buffer): Promise<void> {
  await disk.uploadPages(data, firstPage * PAGE, data.length);
}

async function clear(disk: PageBlobClient, firstPage: number, pageCount: number): Promise<void> {
  await disk.clearPages(firstPage * PAGE, pageCount * PAGE);
}

async function snapshot(disk: PageBlobClient): Promise<string> {
  const { snapshot: s } = await disk.createSnapshot();
  if (!s) throw new Error("no snapshot id");
  return s;
}

interface InclusiveRange {
  start: number;
  end: number;
}

/** "P 1024-1535" / "C 8704-9727": kind and inclusive bytes, as the service reports them. */
function rangesOf(page: { pageRange?: InclusiveRange[]; clearRange?: InclusiveRange[] }): string[] {
  return [
    ...(page.pageRange ?? []).map((r) => ({ kind: "P", ...r })),
    ...(page.clearRange ?? []).map((r) => ({ kind: "C", ...r })),
  ]
    .sort((a, b) => a.start - b.start)
    .map((r) => `${r.kind} ${r.start}-${r.end}`);
}

/** Every page of a diff, as the engine reads it: withSnapshot(S).listPageRangesDiff(...).byPage(...). */
async function diffPages(
  client: BlobServiceClient,
  container: string,
  name: string,
  s: string,
  p: string,
  segment: { offset: number; count: number },
  maxPageSize?: number,
): Promise<PageBlobGetPageRangesDiffResponseModel[]> {
  const blob = client.getContainerClient(container).getPageBlobClient(name).withSnapshot(s);
  return asArray(blob.listPageRangesDiff(segment.offset, segment.count, p).byPage({ maxPageSize }));
}

async function asArray<T>(iter: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of iter) out.push(x);
  return out;
}

function requestsSince(mark: number, predicate: (r: ProxyRequestInfo) => boolean): ProxyRequestInfo[] {
  return proxy.requests.slice(mark).filter(predicate);
}

/**
 * The worked example (pages of 512 bytes, 32 pages):
 *
 *   page      0  1  2  3  4 ..  8  9 10 11 .. 16 17 18 19 .. 24 25 .. 28 29
 *   prev      a  a  a  a        b  b  b  b     c  c  c  c     d  d
 *   snapshot  a  a  x  a  f     b  b  b  b     c  .  .  c     .  .     e  e
 *                      ^  ^     (8-9 rewritten     (17-18      (cleared)  (new)
 *              changed  new      with same bytes)   cleared)
 *
 *   PageRange  [2] [4] [28,29]      ClearRange  [17,18] [24,25]
 */
async function workedExample(): Promise<{ container: string; name: string; prev: string; snap: string }> {
  const { name, container, disk } = await newDisk(32);
  await write(disk, 0, pages(4, 0x61));
  await write(disk, 8, pages(4, 0x62));
  await write(disk, 16, pages(4, 0x63));
  await write(disk, 24, pages(2, 0x64));
  const prev = await snapshot(disk);
  await write(disk, 2, pages(1, 0x78));
  await write(disk, 4, pages(1, 0x66));
  await write(disk, 8, pages(2, 0x62));
  await clear(disk, 17, 2);
  await clear(disk, 24, 2);
  await write(disk, 28, pages(2, 0x65));
  const snap = await snapshot(disk);
  return { container, name, prev, snap };
}

const WORKED_EXAMPLE_DIFF = [
  `P ${2 * PAGE}-${3 * PAGE - 1}`,
  `P ${4 * PAGE}-${5 * PAGE - 1}`,
  `C ${17 * PAGE}-${19 * PAGE - 1}`,
  `C ${24 * PAGE}-${26 * PAGE - 1}`,
  `P ${28 * PAGE}-${30 * PAGE - 1}`,
];

test("Azurite alone ignores prevsnapshot (why the proxy exists)", async () => {
  const { container, name, prev, snap } = await workedExample();
  const [page] = await diffPages(direct, container, name, snap, prev, { offset: 0, count: 32 * PAGE });
  expect(page.clearRange ?? []).toEqual([]);
  expect(rangesOf(page)).not.toEqual(WORKED_EXAMPLE_DIFF);
});

test("writes and clears between two snapshots give exactly the changed and cleared pages", async () => {
  const { container, name, prev, snap } = await workedExample();
  const snapProps = await direct
    .getContainerClient(container)
    .getPageBlobClient(name)
    .withSnapshot(snap)
    .getProperties();

  const mark = proxy.requests.length;
  const [response, ...more] = await diffPages(viaProxy, container, name, snap, prev, {
    offset: 0,
    count: 32 * PAGE,
  });
  expect(more).toHaveLength(0);

  expect(rangesOf(response)).toEqual(WORKED_EXAMPLE_DIFF);
  expect(response.continuationToken ?? "").toBe("");
  expect(response.blobContentLength).toBe(32 * PAGE);
  expect(response.etag).toBe(snapProps.etag);
  expect(response._response.headers.get("server")).not.toMatch(/azurite/i);
  expect(response._response.headers.get("content-type")).toBe("application/xml");
  expect(response.requestId).toBeTruthy();
  // Interleaved by start, as Azure sends them: check the raw XML order, not just the parsed lists.
  const xml = response._response.bodyAsText ?? "";
  const order = [...xml.matchAll(/<(PageRange|ClearRange)><Start>(\d+)</g)].map((m) => Number(m[2]));
  expect(order).toEqual([...order].sort((a, b) => a - b));
  expect(order).toHaveLength(5);

  // What the SDK put on the wire: snapshot and prevsnapshot in the query, the segment in x-ms-range.
  const [sent] = requestsSince(mark, isDiffRequest);
  expect(sent.query.get("snapshot")).toBe(snap);
  expect(sent.query.get("prevsnapshot")).toBe(prev);
  expect(sent.headers["x-ms-range"]).toBe(`bytes=0-${32 * PAGE - 1}`);
  expect(sent.query.has("marker")).toBe(false);
  expect(sent.query.has("maxresults")).toBe(false);

  // The same diff through the managed-disk form (x-ms-previous-snapshot-url).
  const prevUrl = viaProxy.getContainerClient(container).getPageBlobClient(name).withSnapshot(prev).url;
  const blob = viaProxy.getContainerClient(container).getPageBlobClient(name).withSnapshot(snap);
  const managed = await blob.getPageRangesDiffForManagedDisks(0, 32 * PAGE, prevUrl);
  // These non-paged calls return {offset, count} with count = End - Start: one byte short of the
  // range's length (an SDK quirk; the engine reads start/end from the paged listing instead).
  const asInclusive = (rs: Array<{ offset: number; count?: number }> | undefined) =>
    (rs ?? []).map((r) => ({ start: r.offset, end: r.offset + (r.count ?? 0) }));
  expect(
    rangesOf({ pageRange: asInclusive(managed.pageRange), clearRange: asInclusive(managed.clearRange) }),
  ).toEqual(WORKED_EXAMPLE_DIFF);
  const [managedSent] = requestsSince(mark, isDiffRequest).slice(1);
  expect(managedSent.headers["x-ms-previous-snapshot-url"]).toBe(prevUrl);
  expect(managedSent.query.has("prevsnapshot")).toBe(false);
});

test("pageSize 2 over 13 ranges: the SDK follows continuation tokens and the union is the whole diff", async () => {
  // prev: pages 0..39 valid. snapshot: odd pages 1..19 rewritten (10 PageRanges), pages 30, 32, 34
  // cleared (3 ClearRanges).
  const { name, container, disk } = await newDisk(40);
  await write(disk, 0, pages(40, 0x30));
  const prev = await snapshot(disk);
  for (let p = 1; p < 20; p += 2) await write(disk, p, pages(1, 0x31));
  for (const p of [30, 32, 34]) await clear(disk, p, 1);
  const snap = await snapshot(disk);
  const expected = [
    ...Array.from({ length: 10 }, (_, i) => `P ${(2 * i + 1) * PAGE}-${(2 * i + 2) * PAGE - 1}`),
    ...[30, 32, 34].map((p) => `C ${p * PAGE}-${(p + 1) * PAGE - 1}`),
  ];
  const whole = { offset: 0, count: 40 * PAGE };

  proxy.pageSize = 2;
  const computedBefore = proxy.computedDiffs;
  let mark = proxy.requests.length;
  const paged = await diffPages(viaProxy, container, name, snap, prev, whole);
  expect(paged.map((p) => rangesOf(p).length)).toEqual([2, 2, 2, 2, 2, 2, 1]);
  expect(paged.flatMap(rangesOf)).toEqual(expected);
  expect(paged.slice(0, -1).every((p) => !!p.continuationToken)).toBe(true);
  expect(paged[paged.length - 1].continuationToken ?? "").toBe("");
  const sent = requestsSince(mark, isDiffRequest);
  expect(sent).toHaveLength(7);
  // Each marker is the previous response's NextMarker, verbatim.
  expect(sent.map((r) => r.query.get("marker"))).toEqual([
    null,
    ...paged.slice(0, -1).map((p) => p.continuationToken),
  ]);

  // maxresults from the client (byPage maxPageSize) applies when smaller than pageSize...
  proxy.pageSize = 5;
  mark = proxy.requests.length;
  const byClient = await diffPages(viaProxy, container, name, snap, prev, whole, 3);
  expect(byClient.map((p) => rangesOf(p).length)).toEqual([3, 3, 3, 3, 1]);
  expect(byClient.flatMap(rangesOf)).toEqual(expected);
  expect(requestsSince(mark, isDiffRequest).every((r) => r.query.get("maxresults") === "3")).toBe(true);

  // ...and pageSize caps it when the client asks for more.
  const capped = await diffPages(viaProxy, container, name, snap, prev, whole, 100);
  expect(capped.map((p) => rangesOf(p).length)).toEqual([5, 5, 3]);
  expect(capped.flatMap(rangesOf)).toEqual(expected);
  // 19 pages over three listings of one (blob, snapshot, previous snapshot): computed once.
  expect(proxy.computedDiffs - computedBefore).toBe(1);
});

test("a range header restricts the answer to that segment, cutting ranges at its edges", async () => {
  const { container, name, prev, snap } = await workedExample();
  // bytes 2048..9215 = pages 4..17: page 4 whole, the clear of 17-18 cut to page 17.
  const [page] = await diffPages(viaProxy, container, name, snap, prev, {
    offset: 4 * PAGE,
    count: 14 * PAGE,
  });
  expect(rangesOf(page)).toEqual([`P ${4 * PAGE}-${5 * PAGE - 1}`, `C ${17 * PAGE}-${18 * PAGE - 1}`]);

  // Segments that tile the disk, each paged, add up to the whole diff.
  proxy.pageSize = 1;
  const tiles: string[] = [];
  for (let offset = 0; offset < 32 * PAGE; offset += 8 * PAGE) {
    const segmentPages = await diffPages(viaProxy, container, name, snap, prev, { offset, count: 8 * PAGE });
    tiles.push(...segmentPages.flatMap(rangesOf));
  }
  expect(tiles).toEqual(WORKED_EXAMPLE_DIFF);
});

test("Azure's refusals: previous snapshot deleted, snapshots swapped, snapshot missing", async () => {
  const { name, container, disk } = await newDisk(8);
  await write(disk, 0, pages(1, 1));
  const prev = await snapshot(disk);
  const snap = await snapshot(disk);
  const whole = { offset: 0, count: 8 * PAGE };
  await expect(diffPages(viaProxy, container, name, prev, snap, whole)).rejects.toMatchObject({
    statusCode: 400,
    code: "PreviousSnapshotCannotBeNewer",
  });
  await disk.withSnapshot(prev).delete();
  await expect(diffPages(viaProxy, container, name, snap, prev, whole)).rejects.toMatchObject({
    statusCode: 409,
    code: "PreviousSnapshotNotFound",
  });
  // A missing target snapshot is Azurite's own 404, relayed.
  await disk.withSnapshot(snap).delete();
  await expect(diffPages(viaProxy, container, name, snap, snap, whole)).rejects.toMatchObject({
    statusCode: 404,
    code: "BlobNotFound",
  });
});

test("a diff against the base blob (no snapshot parameter) follows the blob's latest writes", async () => {
  const { name, container, disk } = await newDisk(8);
  await write(disk, 0, pages(2, 1));
  const prev = await snapshot(disk);
  const base = viaProxy.getContainerClient(container).getPageBlobClient(name);
  const diffOfBase = async () =>
    (await asArray(base.listPageRangesDiff(0, 8 * PAGE, prev).byPage())).flatMap(rangesOf);
  expect(await diffOfBase()).toEqual([]);
  await write(disk, 1, pages(1, 2));
  await clear(disk, 0, 1);
  expect(await diffOfBase()).toEqual([`C 0-${PAGE - 1}`, `P ${PAGE}-${2 * PAGE - 1}`]);
});

test("an injected 409 BlobOverwritten surfaces as err.code, once, then diffs work again", async () => {
  const { container, name, prev, snap } = await workedExample();
  proxy.inject({ status: 409, code: "BlobOverwritten", match: isDiffRequest });
  const whole = { offset: 0, count: 32 * PAGE };
  const err = await diffPages(viaProxy, container, name, snap, prev, whole).catch((e) => e);
  expect(err).toMatchObject({ statusCode: 409, code: "BlobOverwritten" });
  expect(err.response?.headers.get("x-ms-error-code")).toBe("BlobOverwritten");
  const after = await diffPages(viaProxy, container, name, snap, prev, whole);
  expect(after.flatMap(rangesOf)).toEqual(WORKED_EXAMPLE_DIFF);
});

test("an injected 503 reaches a client without retries; the SDK's default policy retries it at once", async () => {
  const { container, name, prev, snap } = await workedExample();
  const whole = { offset: 0, count: 32 * PAGE };

  proxy.inject({ status: 503, code: "ServerBusy", match: isDiffRequest });
  const err = await diffPages(viaProxyNoRetry, container, name, snap, prev, whole).catch((e) => e);
  expect(err).toMatchObject({ statusCode: 503, code: "ServerBusy" });

  // Default retry options: maxTries 4, exponential from 4 s, but the first retry waits 0 ms.
  proxy.inject({ status: 503, code: "ServerBusy", match: isDiffRequest });
  const mark = proxy.requests.length;
  const started = Date.now();
  const retried = await diffPages(viaProxy, container, name, snap, prev, whole);
  expect(retried.flatMap(rangesOf)).toEqual(WORKED_EXAMPLE_DIFF);
  expect(requestsSince(mark, isDiffRequest)).toHaveLength(2);
  expect(Date.now() - started).toBeLessThan(3000);

  // A 409 is never retried by the SDK.
  proxy.inject({ status: 409, code: "BlobOverwritten", match: isDiffRequest, times: 5 });
  const mark409 = proxy.requests.length;
  await expect(diffPages(viaProxy, container, name, snap, prev, whole)).rejects.toMatchObject({
    statusCode: 409,
  });
  expect(requestsSince(mark409, isDiffRequest)).toHaveLength(1);
});

test("an injected socket reset reaches a client without retries; the SDK's default policy retries it", async () => {
  const { container, name, prev, snap } = await workedExample();
  const whole = { offset: 0, count: 32 * PAGE };

  proxy.inject({ status: 0, reset: true, match: isDiffRequest });
  const err = await diffPages(viaProxyNoRetry, container, name, snap, prev, whole).catch((e) => e);
  expect(err).toBeInstanceOf(Error);
  expect(err.statusCode).toBeUndefined();
  expect(err.code).toBe("ECONNRESET");

  proxy.inject({ status: 0, reset: true, match: isDiffRequest });
  const mark = proxy.requests.length;
  const retried = await diffPages(viaProxy, container, name, snap, prev, whole);
  expect(retried.flatMap(rangesOf)).toEqual(WORKED_EXAMPLE_DIFF);
  expect(requestsSince(mark, isDiffRequest)).toHaveLength(2);
});

test("faults match by predicate, count down with times, and leave other traffic alone", async () => {
  const { name, container } = await newDisk(8);
  const blob = viaProxyNoRetry.getContainerClient(container).getPageBlobClient(name);
  proxy.inject({ status: 500, code: "InternalError", match: isPutPage, times: 2 });
  expect((await blob.getProperties()).contentLength).toBe(8 * PAGE); // HEAD: not a Put Page
  for (let i = 0; i < 2; i++) {
    await expect(blob.uploadPages(pages(1, 9), 0, PAGE)).rejects.toMatchObject({
      statusCode: 500,
      code: "InternalError",
    });
  }
  await blob.uploadPages(pages(1, 9), 0, PAGE);
  // A fault on a HEAD has no body, so the SDK leaves err.code unset and puts x-ms-error-code in
  // err.details.errorCode, exactly as it does for Azurite's own HEAD errors.
  proxy.inject({ status: 412, code: "ConditionNotMet" });
  await expect(blob.getProperties()).rejects.toMatchObject({
    statusCode: 412,
    details: { errorCode: "ConditionNotMet" },
  });
});

test("create, a 4 MiB Put Page, a clear and downloads pass through byte-exact", async () => {
  const container = uniqueName("diffproxy");
  await viaProxy.getContainerClient(container).create();
  const blob = viaProxy.getContainerClient(container).getPageBlobClient(uniqueName("disk"));
  await blob.create(8 * MiB);
  const big = crypto.randomBytes(4 * MiB);
  const small = crypto.randomBytes(3 * PAGE);
  const mark = proxy.requests.length;
  await blob.uploadPages(big, 0, big.length, {
    transactionalContentMD5: crypto.createHash("md5").update(big).digest(),
  });
  await blob.uploadPages(small, 6 * MiB, small.length);
  await blob.clearPages(PAGE, PAGE);
  expect(requestsSince(mark, isPutPage)).toHaveLength(3);

  const expected = Buffer.alloc(8 * MiB);
  big.copy(expected, 0);
  expected.fill(0, PAGE, 2 * PAGE);
  small.copy(expected, 6 * MiB);
  const whole = await blob.downloadToBuffer(0, 8 * MiB);
  expect(whole.equals(expected)).toBe(true);
  const piece = await blob.download(6 * MiB, 3 * PAGE, { rangeGetContentMD5: true });
  expect(
    piece.contentMD5 && Buffer.from(piece.contentMD5).equals(crypto.createHash("md5").update(small).digest()),
  ).toBe(true);
  expect(requestsSince(mark, isGetBlob).length).toBeGreaterThanOrEqual(2);

  // Non-diff page listings are Azurite's own answer, Server header included.
  const [ranges] = await asArray(blob.listPageRanges(0, 8 * MiB).byPage());
  expect(ranges.pageRange).toEqual([
    { start: 0, end: PAGE - 1 },
    { start: 2 * PAGE, end: 4 * MiB - 1 },
    { start: 6 * MiB, end: 6 * MiB + 3 * PAGE - 1 },
  ]);
  expect(ranges._response.headers.get("server")).toMatch(/azurite/i);
});

// ---------------------------------------------------------------------------------------------
// Managed-disk URLs, set up here by hand as the ARM fake sets them up: the disk is blob `abcd` in a
// container of its own, each grant a stored access policy of that container named by the SAS (`si`).

interface ManagedFixture {
  container: string;
  disk: PageBlobClient;
  /** Maps an alias for the disk (snapshot undefined) or a snapshot; returns its SAS URL through the proxy. */
  open(
    snapshot: string | undefined,
    options?: { incremental?: boolean; permissions?: string },
  ): Promise<string>;
  /** Deletes every stored access policy of the container: every URL opened so far stops working. */
  revokeAll(): Promise<void>;
}

async function managedDisk(pageCount: number): Promise<ManagedFixture> {
  const s = testStorage();
  const container = uniqueName("mdfam");
  const containerClient = direct.getContainerClient(container);
  await containerClient.create();
  const disk = containerClient.getPageBlobClient("abcd");
  await disk.create(pageCount * PAGE);
  const credential = new StorageSharedKeyCredential(SOURCE_ACCOUNT, s.keys[SOURCE_ACCOUNT]);
  return {
    container,
    disk,
    async open(snapshot, options = {}) {
      const id = crypto.randomUUID();
      const { signedIdentifiers } = await containerClient.getAccessPolicy();
      await containerClient.setAccessPolicy(undefined, [
        ...signedIdentifiers,
        {
          id,
          accessPolicy: {
            permissions: options.permissions ?? "r",
            startsOn: new Date(Date.now() - 60_000),
            expiresOn: new Date(Date.now() + 3_600_000),
          },
        },
      ]);
      const blob: ManagedBlob = {
        account: SOURCE_ACCOUNT,
        container,
        blob: "abcd",
        snapshot,
        incremental: options.incremental ?? snapshot !== undefined,
      };
      const base = proxy.mapManaged(`md-${uniqueName("h")}/${uniqueName("c")}/abcd`, blob);
      const sas = generateBlobSASQueryParameters(
        { containerName: container, blobName: "abcd", snapshotTime: snapshot, identifier: id },
        credential,
      );
      return `${base}?${sas.toString()}`;
    },
    async revokeAll() {
      await containerClient.setAccessPolicy(undefined, []);
    },
  };
}

function anonymous(url: string): PageBlobClient {
  return new PageBlobClient(url, new AnonymousCredential(), { retryOptions: { maxTries: 1 } });
}

/** getPageRangesDiffForManagedDisks answers {offset, count = End - Start}: back to "P a-b" inclusive. */
function managedRangesOf(r: {
  pageRange?: Array<{ offset: number; count?: number }>;
  clearRange?: Array<{ offset: number; count?: number }>;
}): string[] {
  return rangesOf({
    pageRange: (r.pageRange ?? []).map((x) => ({ start: x.offset, end: x.offset + (x.count ?? 0) })),
    clearRange: (r.clearRange ?? []).map((x) => ({ start: x.offset, end: x.offset + (x.count ?? 0) })),
  });
}

test("a managed-disk URL is served as the blob or snapshot it stands for; Azurite judges its SAS", async () => {
  const md = await managedDisk(8);
  await md.disk.uploadPages(pages(2, 7), 0, 2 * PAGE);
  const { snapshot } = await md.disk.createSnapshot();
  await md.disk.uploadPages(pages(1, 8), 0, PAGE);
  const snapUrl = await md.open(snapshot);
  const diskUrl = await md.open(undefined, { permissions: "rw" });
  expect(new URL(snapUrl).pathname).toMatch(/^\/md-h[0-9a-f]+\/c[0-9a-f]+\/abcd$/);
  expect(new URL(snapUrl).searchParams.has("snapshot")).toBe(false);

  const mark = proxy.requests.length;
  const fromSnapshot = await anonymous(snapUrl).downloadToBuffer(0, 2 * PAGE);
  expect(fromSnapshot.equals(pages(2, 7))).toBe(true);
  const fromDisk = await anonymous(diskUrl).downloadToBuffer(0, PAGE);
  expect(fromDisk.equals(pages(1, 8))).toBe(true);
  // The log shows the URL the client used, not the rewritten one.
  expect(requestsSince(mark, isGetBlob).map((r) => r.path.split("/")[1].slice(0, 3))).toEqual(["md-", "md-"]);

  // Writes: refused on a read-only snapshot URL, done through a read-write disk URL.
  await expect(anonymous(snapUrl).uploadPages(pages(1, 1), 0, PAGE)).rejects.toMatchObject({
    statusCode: 403,
  });
  await anonymous(diskUrl).uploadPages(pages(1, 9), 4 * PAGE, PAGE);
  expect((await md.disk.downloadToBuffer(4 * PAGE, PAGE)).equals(pages(1, 9))).toBe(true);

  // A managed URL names one blob: a snapshot parameter on it is refused.
  await expect(anonymous(diskUrl).withSnapshot(snapshot!).getProperties()).rejects.toMatchObject({
    statusCode: 400,
  });

  // Deleting the stored access policies (what endGetAccess does) makes Azurite refuse both URLs.
  await md.revokeAll();
  for (const url of [snapUrl, diskUrl]) {
    await expect(anonymous(url).getProperties()).rejects.toMatchObject({ statusCode: 403 });
  }
});

test("managed diff: between two incremental snapshots of one blob, by x-ms-previous-snapshot-url, segmented", async () => {
  const md = await managedDisk(32);
  const write = (p: number, data: Buffer) => md.disk.uploadPages(data, p * PAGE, data.length);
  await write(0, pages(4, 0x61));
  await write(8, pages(4, 0x62));
  await write(16, pages(4, 0x63));
  await write(24, pages(2, 0x64));
  const { snapshot: prev } = await md.disk.createSnapshot();
  await write(2, pages(1, 0x78));
  await write(4, pages(1, 0x66));
  await write(8, pages(2, 0x62));
  await md.disk.clearPages(17 * PAGE, 2 * PAGE);
  await md.disk.clearPages(24 * PAGE, 2 * PAGE);
  await write(28, pages(2, 0x65));
  const { snapshot: snap } = await md.disk.createSnapshot();
  const prevUrl = await md.open(prev);
  const snapUrl = await md.open(snap);

  const mark = proxy.requests.length;
  const whole = await anonymous(snapUrl).getPageRangesDiffForManagedDisks(0, 32 * PAGE, prevUrl);
  expect(managedRangesOf(whole)).toEqual(WORKED_EXAMPLE_DIFF);
  expect(whole._response.headers.get("server")).not.toMatch(/azurite/i);
  const [sent] = requestsSince(mark, isDiffRequest);
  expect(sent.headers["x-ms-previous-snapshot-url"]).toBe(prevUrl);
  expect(sent.query.has("prevsnapshot")).toBe(false);

  // Against the disk itself (its current state), and in segments that add up to the whole.
  const diskUrl = await md.open(undefined);
  const ofDisk = await anonymous(diskUrl).getPageRangesDiffForManagedDisks(0, 32 * PAGE, prevUrl);
  expect(managedRangesOf(ofDisk)).toEqual(WORKED_EXAMPLE_DIFF);
  const tiles: string[] = [];
  for (let offset = 0; offset < 32 * PAGE; offset += 8 * PAGE)
    tiles.push(
      ...managedRangesOf(
        await anonymous(snapUrl).getPageRangesDiffForManagedDisks(offset, 8 * PAGE, prevUrl),
      ),
    );
  expect(tiles).toEqual(WORKED_EXAMPLE_DIFF);
});

test("managed diff refusals: another blob, not incremental, a disk, a plain URL, newer, revoked, deleted", async () => {
  const md = await managedDisk(8);
  await md.disk.uploadPages(pages(1, 1), 0, PAGE);
  const { snapshot: s1 } = await md.disk.createSnapshot();
  await md.disk.uploadPages(pages(1, 2), PAGE, PAGE);
  const { snapshot: s2 } = await md.disk.createSnapshot();
  const url1 = await md.open(s1);
  const url2 = await md.open(s2);
  const whole = { offset: 0, count: 8 * PAGE };
  const diff = (target: string, previous: string) =>
    anonymous(target).getPageRangesDiffForManagedDisks(whole.offset, whole.count, previous);
  expect(managedRangesOf(await diff(url2, url1))).toEqual([`P ${PAGE}-${2 * PAGE - 1}`]);

  const other = await managedDisk(8);
  await other.disk.uploadPages(pages(1, 3), 0, PAGE);
  const { snapshot: o1 } = await other.disk.createSnapshot();
  const otherUrl = await other.open(o1);
  const notSupported = { statusCode: 409, code: "PreviousSnapshotOperationNotSupported" };
  await expect(diff(url2, otherUrl)).rejects.toMatchObject(notSupported);
  await expect(diff(url2, await md.open(s1, { incremental: false }))).rejects.toMatchObject(notSupported);
  await expect(diff(url2, await md.open(undefined))).rejects.toMatchObject(notSupported);
  const plainPrev = viaProxy.getContainerClient(md.container).getPageBlobClient("abcd").withSnapshot(s1!).url;
  await expect(diff(url2, plainPrev)).rejects.toMatchObject(notSupported);
  await expect(diff(url1, url2)).rejects.toMatchObject({
    statusCode: 400,
    code: "PreviousSnapshotCannotBeNewer",
  });

  // The previous URL's own SAS must work: a revoked one means the service cannot find that snapshot.
  const revocable = await managedDisk(8);
  await revocable.disk.uploadPages(pages(1, 4), 0, PAGE);
  const { snapshot: r1 } = await revocable.disk.createSnapshot();
  const { snapshot: r2 } = await revocable.disk.createSnapshot();
  const rUrl1 = await revocable.open(r1);
  await revocable.revokeAll();
  const rUrl2 = await revocable.open(r2);
  await expect(diff(rUrl2, rUrl1)).rejects.toMatchObject({
    statusCode: 409,
    code: "PreviousSnapshotNotFound",
  });
  const forged = (url: string) => url.replace(/sig=[^&]+/, "sig=AAAA");
  await expect(diff(url2, forged(url1))).rejects.toMatchObject({
    statusCode: 409,
    code: "PreviousSnapshotNotFound",
  });
  // A target whose own SAS fails is Azurite's 403, before the pair is even looked at.
  await expect(diff(forged(url2), otherUrl)).rejects.toMatchObject({ statusCode: 403 });
  await md.disk.withSnapshot(s1!).delete();
  await expect(diff(url2, url1)).rejects.toMatchObject({ statusCode: 409, code: "PreviousSnapshotNotFound" });
  await md.revokeAll();
  await expect(diff(url2, url1)).rejects.toMatchObject({ statusCode: 403 });
});
