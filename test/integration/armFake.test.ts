/**
 * The ARM fake driven only through the real clients: @azure/arm-compute's ComputeManagementClient
 * over HTTPS (trusting the fake's generated certificate in this process only) and @azure/storage-blob
 * against the accessSAS URLs it hands out, on the shared Azurite behind the diff proxy. Covers disks
 * (empty and upload), incremental and full snapshots, grant/revoke, managed-disk diffs and their
 * refusals, long-running operations in each of ARM's shapes, 404s, denied and assigned roles, VM
 * disks, documented limits, injected faults and a deleted resource group.
 */
import { execFile } from "node:child_process";
import http from "node:http";
import https from "node:https";
import { ComputeManagementClient } from "@azure/arm-compute";
import { AnonymousCredential, PageBlobClient } from "@azure/storage-blob";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";
import { startDiffProxy, type DiffProxy } from "../fixtures/diffProxy";
import {
  ARM_SCOPE,
  BUILT_IN_ROLES,
  startArmFake,
  vhdFooter,
  type ArmFake,
  type ArmFakeOptions,
  type ArmRequest,
} from "../fixtures/armFake";

const PAGE = 512;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** Poll the fake's operations quickly; the SDK's default interval is 2 s when no Retry-After comes. */
const FAST = { updateIntervalInMs: 5 };
const READ = { access: "Read", durationInSeconds: 3600 } as const;

let proxy: DiffProxy;
let arm: ArmFake;
let client: ComputeManagementClient;
/** Same fake, no retries: what the service answered reaches the test as it was. */
let noRetry: ComputeManagementClient;
const extraFakes: ArmFake[] = [];

function fakeOptions(extra: Partial<ArmFakeOptions> = {}): ArmFakeOptions {
  const s = testStorage();
  return {
    proxy,
    storage: {
      blobEndpoint: `http://127.0.0.1:${s.blobPort}`,
      account: SOURCE_ACCOUNT,
      key: s.keys[SOURCE_ACCOUNT],
    },
    ...extra,
  };
}

function computeClient(fake: ArmFake, retries = true): ComputeManagementClient {
  return new ComputeManagementClient(
    fake.credential,
    fake.subscriptionId,
    fake.clientOptions({
      retryOptions: retries ? { retryDelayInMs: 10, maxRetryDelayInMs: 50 } : { maxRetries: 0 },
    }),
  );
}

beforeAll(async () => {
  const s = testStorage();
  proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  arm = await startArmFake(fakeOptions({ listPageSize: 2, backgroundCopyMs: 400 }));
  client = computeClient(arm);
  noRetry = computeClient(arm, false);
});

afterAll(async () => {
  for (const f of extraFakes) await f.close();
  await arm.close();
  await proxy.close();
});

afterEach(() => {
  arm.clearFaults();
  arm.resetAuthorization();
  proxy.pageSize = 10_000;
});

function group(): string {
  const rg = uniqueName("rg-");
  arm.createResourceGroup(rg);
  return rg;
}

function since(mark: number, filter?: (r: ArmRequest) => boolean): ArmRequest[] {
  return arm.requests.slice(mark).filter((r) => filter?.(r) ?? true);
}

async function snapshotOf(rg: string, name: string, diskId: string, extra: Record<string, unknown> = {}) {
  return client.snapshots.createOrUpdate(
    rg,
    name,
    {
      location: arm.location,
      incremental: true,
      creationData: { createOption: "Copy", sourceResourceId: diskId },
      ...extra,
    },
    FAST,
  );
}

async function readSas(rg: string, snapshot: string): Promise<string> {
  const { accessSAS } = await client.snapshots.grantAccess(rg, snapshot, READ, FAST);
  if (!accessSAS) throw new Error("no accessSAS");
  return accessSAS;
}

function sasBlob(url: string): PageBlobClient {
  return new PageBlobClient(url, new AnonymousCredential(), { retryOptions: { maxTries: 1 } });
}

function pages(count: number, fill: number): Buffer {
  return Buffer.alloc(count * PAGE, fill);
}

/** "P a-b" / "C a-b" in inclusive bytes, from getPageRangesDiffForManagedDisks ({offset, count = end - start}). */
function managedRanges(r: {
  pageRange?: Array<{ offset: number; count?: number }>;
  clearRange?: Array<{ offset: number; count?: number }>;
}): string[] {
  return [
    ...(r.pageRange ?? []).map((x) => ({ k: "P", ...x })),
    ...(r.clearRange ?? []).map((x) => ({ k: "C", ...x })),
  ]
    .sort((a, b) => a.offset - b.offset)
    .map((x) => `${x.k} ${x.offset}-${x.offset + (x.count ?? 0)}`);
}

async function expectRest(promise: Promise<unknown>, statusCode: number, code: string): Promise<Error> {
  const err = (await promise.then(
    () => undefined,
    (e: unknown) => e,
  )) as (Error & { statusCode?: number; code?: string }) | undefined;
  expect(err).toBeInstanceOf(Error);
  expect({ statusCode: err?.statusCode, code: err?.code }).toEqual({ statusCode, code });
  return err as Error;
}

test("TLS with a generated certificate, trusted by this client only; bearer token required; plain HTTP refused", async () => {
  const rg = group();
  const id = await arm.createDisk({
    resourceGroup: rg,
    name: "os",
    sizeBytes: 8 * MiB,
    sku: "Premium_LRS",
    zone: "2",
  });
  const mark = arm.requests.length;
  const disk = await client.disks.get(rg, "os");
  expect(disk).toMatchObject({
    id,
    name: "os",
    location: arm.location,
    sku: { name: "Premium_LRS", tier: "Premium" },
    zones: ["2"],
    diskSizeBytes: 8 * MiB,
    diskSizeGB: 1,
    diskState: "Unattached",
    provisioningState: "Succeeded",
    creationData: { createOption: "Empty" },
  });
  expect(disk.uniqueId).toMatch(/^[0-9a-f-]{36}$/);
  const [sent] = since(mark);
  expect(sent).toMatchObject({
    method: "GET",
    operation: "Disks_Get",
    apiVersion: "2026-03-02",
    bearer: true,
  });
  expect(arm.credential.scopesRequested).toContain(ARM_SCOPE);

  // The same client without the test CA refuses the certificate: nothing else in the process trusts it.
  const untrusting = new ComputeManagementClient(arm.credential, arm.subscriptionId, {
    endpoint: arm.endpoint,
    retryOptions: { maxRetries: 0 },
  });
  const tlsErr = (await untrusting.disks.get(rg, "os").catch((e: unknown) => e)) as { code?: string };
  expect(tlsErr.code).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);

  // The SDK sends bearer tokens over TLS only.
  const plain = new ComputeManagementClient(arm.credential, arm.subscriptionId, {
    endpoint: arm.endpoint.replace("https:", "http:"),
    retryOptions: { maxRetries: 0 },
  });
  await expect(plain.disks.get(rg, "os")).rejects.toThrow(/non-TLS|https/i);

  // Plain HTTP on the port gets no HTTP answer at all.
  const port = Number(new URL(arm.endpoint).port);
  const plainAnswer = await new Promise<string>((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/subscriptions" }, (res) =>
      resolve(`HTTP ${res.statusCode}`),
    );
    req.on("error", (e) => resolve(`error ${e.message}`));
    req.setTimeout(5000, () => req.destroy(new Error("timeout")));
  });
  expect(plainAnswer).not.toMatch(/^HTTP 2/);

  // Raw HTTPS (trusting the CA per request): without a token ARM says 401; without api-version 400.
  const raw = (pathAndQuery: string, headers: Record<string, string> = {}) =>
    new Promise<{ status?: number; code?: string }>((resolve, reject) => {
      const req = https.get(`${arm.endpoint}${pathAndQuery}`, { ca: arm.ca, headers }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode, code: JSON.parse(body).error?.code }));
      });
      req.on("error", reject);
    });
  expect(await raw(`${id}?api-version=2026-03-02`)).toEqual({ status: 401, code: "AuthenticationFailed" });
  expect(await raw(id, { Authorization: "Bearer x" })).toEqual({
    status: 400,
    code: "MissingApiVersionParameter",
  });

  // ARM paths and names are case-insensitive; answers use the names as created.
  expect((await client.disks.get(rg.toUpperCase(), "OS")).id).toBe(id);
});

test("a child process trusts the fake through NODE_EXTRA_CA_CERTS=caFile, with no option in its code", async () => {
  const rg = group();
  await arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: MiB });
  const script = `
    const { ComputeManagementClient } = require("@azure/arm-compute");
    const credential = { getToken: async () => ({ token: "t", expiresOnTimestamp: Date.now() + 3600e3 }) };
    const client = new ComputeManagementClient(credential, process.argv[1], {
      endpoint: process.argv[2], retryOptions: { maxRetries: 0 } });
    client.disks.get(process.argv[3], "d").then(
      (d) => console.log(d.diskState), (e) => console.log("error", e.code));`;
  const run = (env: NodeJS.ProcessEnv) =>
    new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ["-e", script, arm.subscriptionId, arm.endpoint, rg],
        { cwd: process.cwd(), env, timeout: 30_000 },
        (err, stdout) => (err ? reject(err) : resolve(stdout.trim())),
      ),
    );
  const base = { PATH: process.env.PATH ?? "" };
  expect(await run({ ...base, NODE_EXTRA_CA_CERTS: arm.caFile })).toBe("Unattached");
  expect(await run(base)).toMatch(/^error .*(SELF_SIGNED|CERT)/);
});

test("disks through long-running operations: create polls the monitor then GETs the disk; PATCH tags; list pages by nextLink", async () => {
  const rg = group();
  let mark = arm.requests.length;
  const created = await client.disks.createOrUpdate(
    rg,
    "data1",
    {
      location: arm.location,
      sku: { name: "StandardSSD_LRS" },
      diskSizeGB: 1,
      creationData: { createOption: "Empty" },
      tags: { app: "x" },
    },
    FAST,
  );
  expect(created).toMatchObject({
    name: "data1",
    provisioningState: "Succeeded",
    diskSizeGB: 1,
    diskSizeBytes: GiB,
    tags: { app: "x" },
    diskState: "Unattached",
  });
  const lro = since(mark);
  expect(lro.map((r) => `${r.operation} ${r.status}`)).toEqual([
    "Disks_CreateOrUpdate 202",
    "DiskOperations_Get 200", // InProgress
    "DiskOperations_Get 200", // Succeeded
    "Disks_Get 200", // final GET of the PUT's own URL
  ]);
  expect(lro[1].query.get("monitor")).toBeNull();

  // A managed disk's blob is its content plus a fixed-VHD footer.
  const blob = arm.diskBlob(created.id!);
  const props = await blob.getProperties();
  expect(props.contentLength).toBe(GiB + 512);
  const footer = await blob.downloadToBuffer(GiB, 512);
  expect(footer.subarray(0, 8).toString("ascii")).toBe("conectix");
  expect(footer.readBigUInt64BE(48)).toBe(BigInt(GiB));
  expect(footer.readUInt32BE(60)).toBe(2);
  expect(footer.equals(vhdFooter(GiB, created.uniqueId!, created.timeCreated!))).toBe(true);

  const patched = await client.disks.update(rg, "data1", { tags: { app: "y", owner: "z" } }, FAST);
  expect(patched.tags).toEqual({ app: "y", owner: "z" });
  expect((await client.disks.get(rg, "data1")).tags).toEqual({ app: "y", owner: "z" });

  for (const name of ["data2", "data3"])
    await arm.createDisk({ resourceGroup: rg, name, sizeBytes: 4 * MiB });
  mark = arm.requests.length;
  const names: string[] = [];
  for await (const d of client.disks.listByResourceGroup(rg)) names.push(d.name!);
  expect(names.sort()).toEqual(["data1", "data2", "data3"]);
  const listed = since(mark, (r) => r.operation === "Disks_ListByResourceGroup");
  expect(listed).toHaveLength(2); // two per page
  expect(listed[1].query.get("$skiptoken")).toBe("2");

  // Growth moves the footer to the new end.
  await client.disks.update(rg, "data2", { diskSizeGB: 1 }, FAST);
  const grown = arm.diskBlob(arm.diskId(rg, "data2"));
  expect((await grown.getProperties()).contentLength).toBe(GiB + 512);
  expect((await grown.downloadToBuffer(GiB, 512)).subarray(0, 8).toString("ascii")).toBe("conectix");
  await expectRest(noRetry.disks.update(rg, "data1", { diskSizeGB: 0 }, FAST), 400, "InvalidParameter");
});

test("incremental snapshots: the disk at that instant, tagged, listed, one family; a full snapshot is a copy", async () => {
  const rg = group();
  const diskId = await arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: 4 * MiB });
  await arm.writeDisk(diskId, 0, pages(4, 0x61));
  const disk = await client.disks.get(rg, "d");
  const s1 = await snapshotOf(rg, "d-s1", diskId, { tags: { "diskdelta.disk": "d", "diskdelta.run": "r1" } });
  await arm.writeDisk(diskId, 0, pages(1, 0x62));
  const s2 = await snapshotOf(rg, "d-s2", diskId);
  expect(s1).toMatchObject({
    provisioningState: "Succeeded",
    incremental: true,
    creationData: { createOption: "Copy", sourceResourceId: diskId, sourceUniqueId: disk.uniqueId },
    completionPercent: 100,
    snapshotAccessState: "Available",
    diskSizeBytes: 4 * MiB,
    tags: { "diskdelta.disk": "d", "diskdelta.run": "r1" },
  });
  expect(s1.incrementalSnapshotFamilyId).toBeTruthy();
  expect(s2.incrementalSnapshotFamilyId).toBe(s1.incrementalSnapshotFamilyId);

  const first = await arm.snapshotBlob(s1.id!).downloadToBuffer(0, 4 * PAGE);
  expect(first.equals(pages(4, 0x61))).toBe(true);
  const second = await arm.snapshotBlob(s2.id!).downloadToBuffer(0, PAGE);
  expect(second.equals(pages(1, 0x62))).toBe(true);

  const listed: Array<{ name?: string; tags?: Record<string, string> }> = [];
  for await (const s of client.snapshots.listByResourceGroup(rg)) listed.push(s);
  expect(listed.map((s) => s.name).sort()).toEqual(["d-s1", "d-s2"]);
  expect(listed.find((s) => s.name === "d-s1")?.tags).toEqual({
    "diskdelta.disk": "d",
    "diskdelta.run": "r1",
  });

  const full = await snapshotOf(rg, "d-full", diskId, { incremental: false });
  expect(full.incremental).toBe(false);
  expect(full.incrementalSnapshotFamilyId).toBeUndefined();
  expect((await arm.snapshotBlob(full.id!).downloadToBuffer(0, PAGE)).equals(pages(1, 0x62))).toBe(true);

  // Re-PUT with another source is refused; with the same source it updates tags.
  const otherId = await arm.createDisk({ resourceGroup: rg, name: "other", sizeBytes: MiB });
  await expectRest(snapshotOf(rg, "d-s1", otherId), 409, "PropertyChangeNotAllowed");
  expect((await snapshotOf(rg, "d-s1", diskId, { tags: { keep: "1" } })).tags).toEqual({ keep: "1" });

  // Deleting the disk leaves its incremental snapshots readable.
  await client.disks.delete(rg, "d", FAST);
  await expectRest(noRetry.disks.get(rg, "d"), 404, "ResourceNotFound");
  expect((await arm.snapshotBlob(s1.id!).downloadToBuffer(0, PAGE)).equals(pages(1, 0x61))).toBe(true);
  expect((await client.snapshots.get(rg, "d-s1")).provisioningState).toBe("Succeeded");
});

/**
 * The worked example of the diff proxy test, on a managed disk (pages of 512 bytes):
 *   prev      pages 0-3 a, 8-11 b, 16-19 c, 24-25 d
 *   snapshot  2 x (changed), 4 f (new), 8-9 rewritten with the same bytes, 17-18 and 24-25 cleared,
 *             28-29 e (new)
 */
async function workedExample(rg: string, name: string): Promise<{ diskId: string }> {
  const diskId = await arm.createDisk({ resourceGroup: rg, name, sizeBytes: MiB });
  await arm.writeDisk(diskId, 0, pages(4, 0x61));
  await arm.writeDisk(diskId, 8 * PAGE, pages(4, 0x62));
  await arm.writeDisk(diskId, 16 * PAGE, pages(4, 0x63));
  await arm.writeDisk(diskId, 24 * PAGE, pages(2, 0x64));
  await snapshotOf(rg, `${name}-s1`, diskId);
  await arm.writeDisk(diskId, 2 * PAGE, pages(1, 0x78));
  await arm.writeDisk(diskId, 4 * PAGE, pages(1, 0x66));
  await arm.writeDisk(diskId, 8 * PAGE, pages(2, 0x62));
  await arm.clearDisk(diskId, 17 * PAGE, 2 * PAGE);
  await arm.clearDisk(diskId, 24 * PAGE, 2 * PAGE);
  await arm.writeDisk(diskId, 28 * PAGE, pages(2, 0x65));
  await snapshotOf(rg, `${name}-s2`, diskId);
  return { diskId };
}

const WORKED_DIFF = [
  `P ${2 * PAGE}-${3 * PAGE - 1}`,
  `P ${4 * PAGE}-${5 * PAGE - 1}`,
  `C ${17 * PAGE}-${19 * PAGE - 1}`,
  `C ${24 * PAGE}-${26 * PAGE - 1}`,
  `P ${28 * PAGE}-${30 * PAGE - 1}`,
];

test("grant Read on two snapshots of one disk: managed-disk SAS URLs, the diff between them, revocation", async () => {
  const rg = group();
  await workedExample(rg, "w");
  const mark = arm.requests.length;
  const sas1 = await readSas(rg, "w-s1");
  const grantCalls = since(mark);
  expect(grantCalls.map((r) => `${r.operation} ${r.status}`)).toEqual([
    "Snapshots_GrantAccess 202",
    "DiskOperations_Get 200",
    "DiskOperations_Get 200",
    "DiskOperations_Get 200", // the Location URL, read for the result (final-state-via location)
  ]);
  expect(grantCalls[0].body).toEqual({ access: "Read", durationInSeconds: 3600 });
  expect(grantCalls[3].query.get("monitor")).toBe("true");
  const sas2 = await readSas(rg, "w-s2");

  // Shaped like Azure's (…/md-<id>/<container>/abcd?sv&sr&si&sig), through the diff proxy, no snapshot=.
  for (const url of [sas1, sas2]) {
    const u = new URL(url);
    expect(`${u.protocol}//${u.host}`).toBe(proxy.url);
    expect(u.pathname).toMatch(/^\/md-[a-z0-9]{12}\/[a-z0-9]{12}\/abcd$/);
    expect([...u.searchParams.keys()].sort()).toEqual(["si", "sig", "sr", "sv"]);
  }
  expect(new URL(sas1).pathname).not.toBe(new URL(sas2).pathname);
  expect((await client.snapshots.get(rg, "w-s2")).diskState).toBe("ActiveSAS");
  expect((await arm.activeGrants()).map((g) => g.resourceId).sort()).toEqual(
    [arm.snapshotId(rg, "w-s1"), arm.snapshotId(rg, "w-s2")].sort(),
  );

  const newer = sasBlob(sas2);
  const size = (await newer.getProperties()).contentLength!;
  expect(size).toBe(MiB + PAGE);
  const diff = await newer.getPageRangesDiffForManagedDisks(0, size, sas1);
  expect(managedRanges(diff)).toEqual(WORKED_DIFF);
  expect(diff._response.headers.get("server")).not.toMatch(/azurite/i);
  // Segments (how an engine should call it: the SDK sends no marker for managed diffs).
  const left = await newer.getPageRangesDiffForManagedDisks(0, 16 * PAGE, sas1);
  const right = await newer.getPageRangesDiffForManagedDisks(16 * PAGE, size - 16 * PAGE, sas1);
  expect([...managedRanges(left), ...managedRanges(right)]).toEqual(WORKED_DIFF);
  // A page size smaller than the diff: the answer carries a continuation token the SDK cannot send back.
  proxy.pageSize = 2;
  const cut = await newer.getPageRangesDiffForManagedDisks(0, size, sas1);
  expect(managedRanges(cut)).toHaveLength(2);
  // Not in the SDK's type for this call, but passed through from the response model.
  expect((cut as { continuationToken?: string }).continuationToken).toBeTruthy();
  proxy.pageSize = 10_000;

  // Reading through the SAS gives the snapshot's bytes; the valid ranges include the footer page.
  const through = await newer.downloadToBuffer(0, size);
  const oracle = await arm.snapshotBlob(arm.snapshotId(rg, "w-s2")).downloadToBuffer(0, size);
  expect(through.equals(oracle)).toBe(true);
  const valid = await newer.getPageRanges(0, size);
  expect(valid.pageRange?.at(-1)).toEqual({ offset: MiB, count: PAGE - 1 });
  // A Read SAS cannot write.
  await expect(newer.uploadPages(pages(1, 1), 0, PAGE)).rejects.toMatchObject({
    statusCode: 403,
    code: "AuthorizationPermissionMismatch",
  });

  // endGetAccess: the URL stops working, and a diff naming it as the previous snapshot is refused.
  await client.snapshots.revokeAccess(rg, "w-s1", FAST);
  expect((await client.snapshots.get(rg, "w-s1")).diskState).toBe("Unattached");
  await expect(sasBlob(sas1).getProperties()).rejects.toMatchObject({ statusCode: 403 });
  await expect(newer.getPageRangesDiffForManagedDisks(0, size, sas1)).rejects.toMatchObject({
    statusCode: 409,
    code: "PreviousSnapshotNotFound",
  });
  await client.snapshots.revokeAccess(rg, "w-s2", FAST);
  await expect(newer.getPageRangesDiffForManagedDisks(0, size, sas1)).rejects.toMatchObject({
    statusCode: 403,
  });
  expect(await arm.activeGrants()).toEqual([]);
});

test("managed diffs refused: previous of another disk, a full snapshot, a deleted snapshot, a newer one, a recreated disk", async () => {
  const rg = group();
  const { diskId } = await workedExample(rg, "a");
  const otherId = await arm.createDisk({ resourceGroup: rg, name: "b", sizeBytes: MiB });
  await arm.writeDisk(otherId, 0, pages(1, 9));
  await snapshotOf(rg, "b-s1", otherId);
  await snapshotOf(rg, "a-full", diskId, { incremental: false });
  const [a1, a2, b1, full] = await Promise.all(["a-s1", "a-s2", "b-s1", "a-full"].map((n) => readSas(rg, n)));
  const target = sasBlob(a2);
  const size = MiB + PAGE;
  const refused = (prev: string, on = target) => on.getPageRangesDiffForManagedDisks(0, size, prev);

  expect(managedRanges(await refused(a1))).toEqual(WORKED_DIFF);
  await expect(refused(b1)).rejects.toMatchObject({
    statusCode: 409,
    code: "PreviousSnapshotOperationNotSupported",
  });
  await expect(refused(full)).rejects.toMatchObject({
    statusCode: 409,
    code: "PreviousSnapshotOperationNotSupported",
  });
  await expect(refused(a2, sasBlob(a1))).rejects.toMatchObject({
    statusCode: 400,
    code: "PreviousSnapshotCannotBeNewer",
  });

  await client.snapshots.delete(rg, "a-s1", FAST);
  await expectRest(noRetry.snapshots.get(rg, "a-s1"), 404, "ResourceNotFound");
  await expect(refused(a1)).rejects.toMatchObject({ statusCode: 409 });

  // A disk deleted and created again under the same name is another disk (another uniqueId).
  await client.snapshots.revokeAccess(rg, "a-s2", FAST);
  await client.disks.delete(rg, "a", FAST);
  const again = await arm.createDisk({ resourceGroup: rg, name: "a", sizeBytes: MiB });
  const reborn = await snapshotOf(rg, "a-again", again);
  expect(reborn.creationData?.sourceResourceId).toBe(diskId);
  const oldS2 = await client.snapshots.get(rg, "a-s2");
  expect(reborn.creationData?.sourceUniqueId).not.toBe(oldS2.creationData?.sourceUniqueId);
  const [oldSas, newSas] = await Promise.all([readSas(rg, "a-s2"), readSas(rg, "a-again")]);
  await expect(refused(oldSas, sasBlob(newSas))).rejects.toMatchObject({
    statusCode: 409,
    code: "PreviousSnapshotOperationNotSupported",
  });
});

test("long-running operations in ARM's other shapes: Location only, 201, polls and Retry-After; a failed operation", async () => {
  const other = await startArmFake(
    fakeOptions({
      lro: { headers: "location", createStatus: 201, pollsInProgress: 2, retryAfterSeconds: 0 },
    }),
  );
  extraFakes.push(other);
  const rg = uniqueName("rg-");
  other.createResourceGroup(rg);
  const c = computeClient(other);
  const diskId = await other.createDisk({ resourceGroup: rg, name: "d", sizeBytes: MiB });

  let mark = other.requests.length;
  const snap = await c.snapshots.createOrUpdate(
    rg,
    "s",
    {
      location: other.location,
      incremental: true,
      creationData: { createOption: "Copy", sourceResourceId: diskId },
    },
    FAST,
  );
  expect(snap.provisioningState).toBe("Succeeded");
  const calls = other.requests.slice(mark);
  expect(calls.map((r) => `${r.operation} ${r.status} ${r.query.get("monitor") ?? "-"}`)).toEqual([
    "Snapshots_CreateOrUpdate 201 -",
    "DiskOperations_Get 202 true",
    "DiskOperations_Get 202 true",
    "DiskOperations_Get 200 true", // the resource itself: with Location alone the SDK does no final GET
  ]);

  // Made to fail: the poller rejects with the operation's error, the resource stays, Failed.
  other.failOperations({
    match: "Snapshots_CreateOrUpdate",
    code: "InternalOperationError",
    message: "boom",
  });
  mark = other.requests.length;
  await expect(
    c.snapshots.createOrUpdate(
      rg,
      "s-failed",
      {
        location: other.location,
        incremental: true,
        creationData: { createOption: "Copy", sourceResourceId: diskId },
      },
      FAST,
    ),
  ).rejects.toThrow();
  expect(other.requests.slice(mark).at(-1)?.status).toBe(500);
  expect((await c.snapshots.get(rg, "s-failed")).provisioningState).toBe("Failed");

  // With both headers (the main fake), a failed operation's monitor says Failed with the error.
  const rgMain = group();
  const mainDisk = await arm.createDisk({ resourceGroup: rgMain, name: "d", sizeBytes: MiB });
  arm.failOperations({ match: "Snapshots_CreateOrUpdate", code: "InternalOperationError", message: "boom" });
  await expect(snapshotOf(rgMain, "s", mainDisk)).rejects.toThrow(/InternalOperationError.*boom/);
  await other.close();
  extraFakes.splice(extraFakes.indexOf(other), 1);
});

test("an operation nobody polls still completes (a crashed client's snapshot exists, Succeeded)", async () => {
  const other = await startArmFake(fakeOptions({ lro: { completeAfterMs: 100, pollsInProgress: 100 } }));
  extraFakes.push(other);
  const rg = uniqueName("rg-");
  other.createResourceGroup(rg);
  const c = computeClient(other);
  const diskId = await other.createDisk({ resourceGroup: rg, name: "d", sizeBytes: MiB });
  const poller = c.snapshots.createOrUpdate(
    rg,
    "orphan",
    {
      location: other.location,
      incremental: true,
      creationData: { createOption: "Copy", sourceResourceId: diskId },
    },
    { updateIntervalInMs: 60_000 },
  );
  await poller.submitted();
  expect((await c.snapshots.get(rg, "orphan")).provisioningState).toBe("Updating");
  await new Promise((r) => setTimeout(r, 150));
  expect((await c.snapshots.get(rg, "orphan")).provisioningState).toBe("Succeeded");
  expect(other.count("DiskOperations_Get")).toBe(0);
  await other.close();
  extraFakes.splice(extraFakes.indexOf(other), 1);
});

test("404s: disk, snapshot, VM, resource group, subscription; DELETE of a missing disk is 204", async () => {
  const rg = group();
  const err = await expectRest(noRetry.disks.get(rg, "missing"), 404, "ResourceNotFound");
  expect(err.message).toBe(
    `The Resource 'Microsoft.Compute/disks/missing' under resource group '${rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`,
  );
  await expectRest(noRetry.snapshots.get(rg, "missing"), 404, "ResourceNotFound");
  await expectRest(noRetry.virtualMachines.get(rg, "missing"), 404, "ResourceNotFound");
  const gone = await expectRest(noRetry.disks.get("no-such-rg", "d"), 404, "ResourceGroupNotFound");
  expect(gone.message).toBe("Resource group 'no-such-rg' could not be found.");
  const elsewhere = new ComputeManagementClient(
    arm.credential,
    "11111111-2222-3333-4444-555555555555",
    arm.clientOptions({ retryOptions: { maxRetries: 0 } }),
  );
  await expectRest(elsewhere.disks.get(rg, "d"), 404, "SubscriptionNotFound");

  const mark = arm.requests.length;
  await client.disks.delete(rg, "missing", FAST);
  expect(since(mark).map((r) => r.status)).toEqual([204]);
  // A snapshot of a disk that does not exist.
  await expectRest(
    noRetry.snapshots.createOrUpdate(
      rg,
      "s",
      {
        location: arm.location,
        incremental: true,
        creationData: { createOption: "Copy", sourceResourceId: arm.diskId(rg, "missing") },
      },
      FAST,
    ),
    404,
    "ResourceNotFound",
  );
});

test("denied and assigned roles: AuthorizationFailed names the action and scope; the disk roles by documented id", async () => {
  const src = group();
  const snaps = group();
  const diskId = await arm.createDisk({ resourceGroup: src, name: "d", sizeBytes: MiB });

  arm.deny("Microsoft.Compute/snapshots/write", snaps);
  const denied = await expectRest(snapshotOf(snaps, "s", diskId), 403, "AuthorizationFailed");
  expect(denied.message).toMatch(
    new RegExp(
      `^The client '[0-9a-f-]+' with object id '[0-9a-f-]+' does not have authorization to perform action 'Microsoft.Compute/snapshots/write' over scope '/subscriptions/${arm.subscriptionId}/resourceGroups/${snaps}/providers/Microsoft.Compute/snapshots/s' or the scope is invalid. If access was recently granted, please refresh your credentials.$`,
    ),
  );
  expect((await snapshotOf(src, "s", diskId)).provisioningState).toBe("Succeeded"); // other groups unaffected
  arm.resetAuthorization();

  // Least privilege for backup: Disk Backup Reader on the disk's group, Disk Snapshot Contributor on the snapshots'.
  expect(BUILT_IN_ROLES.diskBackupReader.id).toBe("3e5e47e6-65f7-47ef-90b5-e5dd4d455f24");
  expect(BUILT_IN_ROLES.diskSnapshotContributor.id).toBe("7efff54f-a5b4-42b5-a1c5-5411624893ce");
  expect(BUILT_IN_ROLES.diskRestoreOperator.id).toBe("b50d9833-a0cb-478e-945f-707fcc997c13");
  arm.assignRole(BUILT_IN_ROLES.diskSnapshotContributor, snaps);
  // Snapshot rights alone are not enough: creating from the disk needs access to the disk too.
  const linked = await expectRest(snapshotOf(snaps, "s1", diskId), 403, "LinkedAuthorizationFailed");
  expect(linked.message).toContain("'Microsoft.Compute/disks/beginGetAccess/action'");
  expect(linked.message).toContain(`'${diskId}'`);
  arm.assignRole(BUILT_IN_ROLES.diskBackupReader, src);
  const s1 = await snapshotOf(snaps, "s1", diskId);
  expect(s1.provisioningState).toBe("Succeeded");
  expect(await readSas(snaps, "s1")).toMatch(/\/abcd\?/);
  await client.snapshots.revokeAccess(snaps, "s1", FAST);
  expect((await client.disks.get(src, "d")).id).toBe(diskId);
  // Not granted: deleting the disk, reading the VM, snapshots in the disk's own group.
  await expectRest(noRetry.disks.delete(src, "d", FAST), 403, "AuthorizationFailed");
  await expectRest(noRetry.virtualMachines.get(src, "vm"), 403, "AuthorizationFailed");
  await expectRest(snapshotOf(src, "s2", diskId), 403, "AuthorizationFailed");
  await client.snapshots.delete(snaps, "s1", FAST);

  // Restore by upload needs disks/write (Disk Restore Operator) and begin/endGetAccess on disks,
  // which no disk role grants together: Disk Restore Operator alone cannot open its upload.
  const target = group();
  arm.assignRole(BUILT_IN_ROLES.diskRestoreOperator, target);
  const upload = {
    location: arm.location,
    creationData: { createOption: "Upload", uploadSizeBytes: 20 * MiB + 512 },
  };
  expect((await client.disks.createOrUpdate(target, "restored", upload, FAST)).diskState).toBe(
    "ReadyToUpload",
  );
  const write = { access: "Write", durationInSeconds: 600 } as const;
  await expectRest(noRetry.disks.grantAccess(target, "restored", write, FAST), 403, "AuthorizationFailed");
});

test("VM disks: the storage profile names the OS disk and the data disks by LUN (resource group upper-cased)", async () => {
  const rg = group();
  const os = await arm.createDisk({ resourceGroup: rg, name: "vm1-os", sizeBytes: 2 * MiB, osType: "Linux" });
  const d0 = await arm.createDisk({ resourceGroup: rg, name: "vm1-data0", sizeBytes: MiB });
  const d3 = await arm.createDisk({
    resourceGroup: rg,
    name: "vm1-data3",
    sizeBytes: MiB,
    sku: "PremiumV2_LRS",
  });
  const vmId = arm.createVm({
    resourceGroup: rg,
    name: "vm1",
    osDisk: os,
    dataDisks: [
      { lun: 0, diskId: d0 },
      { lun: 3, diskId: d3 },
    ],
  });
  const vm = await client.virtualMachines.get(rg, "vm1");
  expect(vm.id).toBe(vmId);
  const profile = vm.storageProfile!;
  expect(profile.osDisk?.managedDisk?.id?.toLowerCase()).toBe(os.toLowerCase());
  expect(profile.osDisk?.managedDisk?.id).toContain(`/resourceGroups/${rg.toUpperCase()}/`);
  expect(profile.osDisk?.osType).toBe("Linux");
  expect(
    profile.dataDisks?.map((d) => [
      d.lun,
      d.managedDisk?.id?.toLowerCase(),
      d.managedDisk?.storageAccountType,
    ]),
  ).toEqual([
    [0, d0.toLowerCase(), "Premium_LRS"],
    [3, d3.toLowerCase(), "PremiumV2_LRS"],
  ]);
  const attached = await client.disks.get(rg, "vm1-data0");
  expect(attached).toMatchObject({ diskState: "Attached", managedBy: vmId });
  await expectRest(noRetry.disks.grantAccess(rg, "vm1-data0", READ, FAST), 409, "OperationNotAllowed");
  await expectRest(noRetry.disks.delete(rg, "vm1-data0", FAST), 409, "OperationNotAllowed");
  // Snapshots of attached disks are what a backup takes.
  expect((await snapshotOf(rg, "vm1-data0-s1", d0)).provisioningState).toBe("Succeeded");
});

test("restore: an Upload disk written through its Write SAS, closed by endGetAccess, then snapshotted and read", async () => {
  const rg = group();
  const uploadSizeBytes = 20 * MiB + 512;
  await expectRest(
    noRetry.disks.createOrUpdate(
      rg,
      "bad",
      { location: arm.location, creationData: { createOption: "Upload", uploadSizeBytes: 20 * MiB } },
      FAST,
    ),
    400,
    "InvalidParameter",
  );
  const created = await client.disks.createOrUpdate(
    rg,
    "restored",
    {
      location: arm.location,
      sku: { name: "Premium_LRS" },
      zones: ["1"],
      creationData: { createOption: "Upload", uploadSizeBytes },
    },
    FAST,
  );
  expect(created).toMatchObject({
    diskState: "ReadyToUpload",
    creationData: { createOption: "Upload", uploadSizeBytes },
    zones: ["1"],
  });
  await expectRest(noRetry.disks.grantAccess(rg, "restored", READ, FAST), 409, "OperationNotAllowed");
  const { accessSAS } = await client.disks.grantAccess(
    rg,
    "restored",
    { access: "Write", durationInSeconds: 600 },
    FAST,
  );
  expect(new URL(accessSAS!).pathname).toMatch(/^\/md-impexp-[a-z0-9]{12}\/[a-z0-9]{12}\/abcd$/);
  expect((await client.disks.get(rg, "restored")).diskState).toBe("ActiveUpload");
  await expectRest(snapshotOf(rg, "too-early", created.id!), 409, "OperationNotAllowed");

  const upload = sasBlob(accessSAS!);
  expect((await upload.getProperties()).contentLength).toBe(uploadSizeBytes);
  const data = Buffer.alloc(3 * PAGE, 0x5a);
  const footer = vhdFooter(20 * MiB, created.uniqueId!, new Date());
  await upload.uploadPages(data, 4 * MiB, data.length);
  await upload.uploadPages(footer, 20 * MiB, PAGE);
  await client.disks.revokeAccess(rg, "restored", FAST);
  const closed = await client.disks.get(rg, "restored");
  expect(closed).toMatchObject({ diskState: "Unattached", diskSizeBytes: 20 * MiB });
  await expect(upload.uploadPages(data, 0, PAGE)).rejects.toMatchObject({ statusCode: 403 });
  await expectRest(
    noRetry.disks.grantAccess(rg, "restored", { access: "Write", durationInSeconds: 600 }, FAST),
    409,
    "OperationNotAllowed",
  );

  await snapshotOf(rg, "restored-s1", created.id!);
  const read = sasBlob(await readSas(rg, "restored-s1"));
  const ranges = await read.getPageRanges(0, uploadSizeBytes);
  expect(ranges.pageRange).toEqual([
    { offset: 4 * MiB, count: 3 * PAGE - 1 },
    { offset: 20 * MiB, count: PAGE - 1 },
  ]);
  expect((await read.downloadToBuffer(4 * MiB, 3 * PAGE)).equals(data)).toBe(true);
  expect((await read.downloadToBuffer(20 * MiB, PAGE)).equals(footer)).toBe(true);
  await client.snapshots.revokeAccess(rg, "restored-s1", FAST);
});

test("background copy: a PremiumV2 snapshot's completionPercent rises to 100; no SAS before", async () => {
  const rg = group();
  const diskId = await arm.createDisk({
    resourceGroup: rg,
    name: "v2",
    sizeBytes: MiB,
    sku: "PremiumV2_LRS",
  });
  const snap = await snapshotOf(rg, "v2-s1", diskId);
  expect(snap.completionPercent).toBeLessThan(100);
  expect(snap.snapshotAccessState).toBe("Pending");
  await expectRest(noRetry.snapshots.grantAccess(rg, "v2-s1", READ, FAST), 409, "OperationNotAllowed");
  arm.setCompletionPercent(snap.id!, 40);
  expect((await client.snapshots.get(rg, "v2-s1")).completionPercent).toBe(40);

  // Unpinned, progress follows time (backgroundCopyMs 400 in this suite).
  const s2 = await snapshotOf(rg, "v2-s2", diskId);
  const seen: number[] = [s2.completionPercent ?? -1];
  while (seen[seen.length - 1] < 100) {
    await new Promise((r) => setTimeout(r, 50));
    seen.push((await client.snapshots.get(rg, "v2-s2")).completionPercent ?? -1);
  }
  expect(seen).toEqual([...seen].sort((a, b) => a - b));
  expect(new Set(seen).size).toBeGreaterThan(2);
  expect((await client.snapshots.get(rg, "v2-s2")).snapshotAccessState).toBe("Available");
  expect(await readSas(rg, "v2-s2")).toMatch(/abcd/);
  await client.snapshots.revokeAccess(rg, "v2-s2", FAST);
  // Other disk types always report 100.
  const std = await arm.createDisk({
    resourceGroup: rg,
    name: "std",
    sizeBytes: MiB,
    sku: "StandardSSD_LRS",
  });
  expect((await snapshotOf(rg, "std-s1", std)).completionPercent).toBe(100);
});

test("a grant ends with its durationInSeconds: the stored policy expires and Azurite refuses the URL", async () => {
  const rg = group();
  const diskId = await arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: MiB });
  await snapshotOf(rg, "s", diskId);
  const { accessSAS } = await client.snapshots.grantAccess(
    rg,
    "s",
    { access: "Read", durationInSeconds: 1 },
    FAST,
  );
  expect((await sasBlob(accessSAS!).getProperties()).contentLength).toBe(MiB + PAGE);
  await new Promise((r) => setTimeout(r, 2100));
  await expect(sasBlob(accessSAS!).getProperties()).rejects.toMatchObject({ statusCode: 403 });
  // Still open as far as ARM is concerned, until endGetAccess.
  expect((await arm.activeGrants()).map((g) => g.resourceId)).toContain(arm.snapshotId(rg, "s"));
  await client.snapshots.revokeAccess(rg, "s", FAST);
  expect((await arm.activeGrants()).map((g) => g.resourceId)).not.toContain(arm.snapshotId(rg, "s"));
});

test("documented limits: 7 incremental snapshots per disk per 5 minutes; SAS on at most 5 snapshots of a family", async () => {
  const rg = group();
  const diskId = await arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: MiB });
  for (let i = 1; i <= 7; i++) await snapshotOf(rg, `s${i}`, diskId);
  await expectRest(snapshotOf(rg, "s8", diskId), 409, "OperationNotAllowed");
  for (let i = 1; i <= 5; i++) await readSas(rg, `s${i}`);
  await expectRest(noRetry.snapshots.grantAccess(rg, "s6", READ, FAST), 409, "OperationNotAllowed");
  await client.snapshots.revokeAccess(rg, "s1", FAST);
  await readSas(rg, "s6");
  for (const i of [2, 3, 4, 5, 6]) await client.snapshots.revokeAccess(rg, `s${i}`, FAST);
});

test("faults: a 503 surfaces without retries and is retried by the SDK's policy; a socket reset; the request log", async () => {
  const rg = group();
  await arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: MiB });
  arm.inject({ status: 503, match: "Disks_Get", retryAfterSeconds: 0 });
  await expectRest(noRetry.disks.get(rg, "d"), 503, "ServiceUnavailable");
  arm.inject({ status: 503, match: "Disks_Get" });
  const mark = arm.requests.length;
  expect((await client.disks.get(rg, "d")).name).toBe("d");
  expect(since(mark).map((r) => r.status)).toEqual([503, 200]);

  arm.inject({ status: 0, reset: true, match: (r) => r.operation === "Disks_Get" && r.name === "d" });
  const reset = (await noRetry.disks.get(rg, "d").catch((e: unknown) => e)) as { code?: string };
  expect(reset.code).toMatch(/ECONNRESET|socket hang up/i);

  // Faults can hit polls: a 500 on the monitor fails the poller without retries.
  arm.inject({ status: 500, match: "DiskOperations_Get" });
  await expect(
    noRetry.snapshots.createOrUpdate(
      rg,
      "s",
      {
        location: arm.location,
        incremental: true,
        creationData: { createOption: "Copy", sourceResourceId: arm.diskId(rg, "d") },
      },
      FAST,
    ),
  ).rejects.toMatchObject({ statusCode: 500 });
  expect(arm.count((r) => r.operation === "Snapshots_CreateOrUpdate" && r.resourceGroup === rg)).toBe(1);
});

test("a deleted resource group takes its disks, snapshots, grants and role assignments with it", async () => {
  const rg = group();
  const diskId = await arm.createDisk({ resourceGroup: rg, name: "d", sizeBytes: MiB });
  await snapshotOf(rg, "s", diskId);
  const sas = await readSas(rg, "s");
  await arm.deleteResourceGroup(rg);
  await expectRest(noRetry.disks.get(rg, "d"), 404, "ResourceGroupNotFound");
  await expectRest(noRetry.snapshots.get(rg, "s"), 404, "ResourceGroupNotFound");
  const status = await sasBlob(sas)
    .getProperties()
    .then(
      () => 200,
      (e: { statusCode?: number }) => e.statusCode,
    );
  expect([403, 404]).toContain(status);
  expect((await arm.activeGrants()).filter((g) => g.resourceId.includes(`/resourceGroups/${rg}/`))).toEqual(
    [],
  );
  expect((await arm.resources()).disks.filter((id) => id.includes(`/${rg}/`))).toEqual([]);

  // A role assigned on the group goes with it: ARM then says 403, not 404.
  const rg2 = group();
  arm.assignRole(BUILT_IN_ROLES.reader, rg2);
  await arm.deleteResourceGroup(rg2);
  await expectRest(noRetry.disks.get(rg2, "d"), 403, "AuthorizationFailed");
});
