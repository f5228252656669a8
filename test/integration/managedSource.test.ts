/**
 * The source port's contract suite (test/contract/source.ts) against both kinds — a page blob on
 * Azurite behind the diff fixture, and a managed disk through the real @azure/arm-compute client
 * and the ARM fake — plus what only the managed kind has: a snapshot of a disk type that copies
 * in the background is handed out only at 100 %; a grant outlives its duration while a reader
 * still reads (renewed) and is revoked when the last one closes; opens of one snapshot share one
 * grant; the sweep's listing ends grants a dead process left open; a snapshot of the run's name
 * that is not the run's is never adopted or deleted; a user's snapshot is never deleted.
 */
import crypto from "node:crypto";
import { ComputeManagementClient } from "@azure/arm-compute";
import type { Engine } from "../../lib/compose";
import { parseBlobUrl } from "../../lib/storage/urls";
import { snapshotName } from "../../lib/sources/managedDisk";
import type { Source } from "../../lib/sources/port";
import { sourceContract, type ContractDisk, type SourceHarness } from "../contract/source";
import { MiB, startManagedWorld, type ManagedWorld } from "../contract/managedEnv";
import { createDisk, readImage, snapshotsIn } from "../support/disks";
import { SOURCE_ACCOUNT, uniqueName } from "../support/testEnv";

let world: ManagedWorld;
let engine: Engine;
let fast: Engine;

beforeAll(async () => {
  world = await startManagedWorld({ backgroundCopyMs: 600 });
  engine = await world.engine();
  // Grants of 2 s: long enough for a call, short enough to see one renewed within a test.
  fast = await world.engine({ DISKDELTA_ACCESS_SECONDS: "2" });
});
afterAll(async () => world.close());
afterEach(() => {
  world.arm.clearFaults();
  world.arm.resetAuthorization();
});

function arm(): ComputeManagementClient {
  return new ComputeManagementClient(
    world.arm.credential,
    world.arm.subscriptionId,
    world.arm.clientOptions(),
  );
}

const pageBlobHarness = (): SourceHarness => ({
  kind: "page-blob",
  storage: engine.storage,
  exportSize: (n) => n,
  newDisk: async (size) => {
    const d = await createDisk(size, world.proxy.url);
    const diskId = uniqueName("pb");
    const source = engine.sources.of({ id: diskId, sourceUrl: d.url });
    const disk: ContractDisk & { container: string } = {
      diskId,
      source,
      container: d.container,
      write: async (offset, data) => {
        await d.client.uploadPages(data, offset, data.length);
      },
      clear: async (offset, length) => {
        await d.client.clearPages(offset, length);
      },
      oracle: (snapshot) => readImage(d.client.withSnapshot(snapshot)),
    };
    return disk;
  },
  existingSnapshots: async (disk) =>
    snapshotsIn(SOURCE_ACCOUNT, (disk as ContractDisk & { container: string }).container),
  openAccess: async () => 0,
});

const managedHarness = (): SourceHarness => ({
  kind: "managed-disk",
  storage: engine.storage,
  exportSize: (n) => n + 512,
  newDisk: async (size) => {
    const rg = world.group();
    const id = await world.arm.createDisk({ resourceGroup: rg, name: "disk", sizeBytes: size });
    const diskId = uniqueName("md");
    const source = engine.sources.of({ id: diskId, sourceUrl: id, sourceDiskId: id });
    const disk: ContractDisk & { rg: string } = {
      diskId,
      source,
      rg,
      write: (offset, data) => world.arm.writeDisk(id, offset, data),
      clear: (offset, length) => world.arm.clearDisk(id, offset, length),
      oracle: (snapshot) => readImage(world.arm.snapshotBlob(snapshot)),
    };
    return disk;
  },
  existingSnapshots: async (disk) =>
    (await world.arm.resources()).snapshots.filter((s) =>
      s.includes(`/resourceGroups/${(disk as ContractDisk & { rg: string }).rg}/`),
    ),
  openAccess: async () => (await world.arm.activeGrants()).length,
});

sourceContract("page blob", pageBlobHarness);
sourceContract("managed disk", managedHarness);

async function managedDisk(e: Engine = engine, opts: { sku?: string } = {}) {
  const rg = world.group();
  const id = await world.arm.createDisk({
    resourceGroup: rg,
    name: "disk",
    sizeBytes: 4 * MiB,
    sku: opts.sku,
  });
  const diskId = uniqueName("md");
  return { rg, id, diskId, source: e.sources.of({ id: diskId, sourceUrl: id, sourceDiskId: id }) as Source };
}

function run(): string {
  return `r-${new Date().toISOString().replace(/[-:.]/g, "")}-${crypto.randomBytes(3).toString("hex")}`;
}

describe("managed disks only", () => {
  test("a snapshot of a disk that copies in the background is handed out only when complete", async () => {
    const d = await managedDisk(engine, { sku: "PremiumV2_LRS" });
    await world.arm.writeDisk(d.id, 0, crypto.randomBytes(MiB));
    const started = Date.now();
    const snap = await d.source.snapshotFor(d.diskId, run());
    // The fake fills it over 600 ms; a grant before 100 % would be refused (409), so this read proves the wait.
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    const opened = await d.source.open(snap.id);
    expect((await engine.storage.read(opened.address, { start: 0, end: MiB })).length).toBe(MiB);
    await opened.close();
    await d.source.deleteSnapshot(snap.id);
  });

  test("opens of one snapshot share a grant, renewed while read past its duration, revoked by the last close", async () => {
    const d = await managedDisk(fast);
    const data = crypto.randomBytes(MiB);
    await world.arm.writeDisk(d.id, 0, data);
    const snap = await d.source.snapshotFor(d.diskId, run());
    const grantsBefore = world.arm.count("Snapshots_GrantAccess");
    const a = await d.source.open(snap.id);
    const b = await d.source.open(snap.id);
    expect(world.arm.count("Snapshots_GrantAccess") - grantsBefore).toBe(1);
    await a.close();
    expect((await world.arm.activeGrants()).length).toBeGreaterThan(0);
    // Past the first grant's 2 s: the read works because the grant was renewed at 1.5 s.
    await new Promise((r) => setTimeout(r, 3000));
    expect(world.arm.count("Snapshots_GrantAccess") - grantsBefore).toBeGreaterThanOrEqual(2);
    expect((await engine.storage.read(b.address, { start: 0, end: MiB })).equals(data)).toBe(true);
    await b.close();
    expect(await world.arm.activeGrants()).toEqual([]);
    // The address is dead once closed: the SAS was revoked.
    await expect(engine.storage.read(b.address, { start: 0, end: MiB })).rejects.toMatchObject({
      statusCode: 403,
    });
    await d.source.deleteSnapshot(snap.id);
  });

  test("the sweep's listing ends a grant a dead process left open", async () => {
    const d = await managedDisk();
    const snap = await d.source.snapshotFor(d.diskId, run());
    const ref = parseSnapshot(snap.id);
    // A process that died after beginGetAccess: the grant is open and nobody here holds it.
    await arm().snapshots.grantAccess(
      ref.rg,
      ref.name,
      { access: "Read", durationInSeconds: 600 },
      { updateIntervalInMs: 5 },
    );
    expect((await world.arm.activeGrants()).map((g) => g.resourceId)).toContain(snap.id);
    const tagged = await d.source.taggedSnapshots(d.diskId);
    expect(tagged.map((t) => t.id)).toEqual([snap.id]);
    expect((await world.arm.activeGrants()).map((g) => g.resourceId)).not.toContain(snap.id);
    await d.source.deleteSnapshot(snap.id);
  });

  test("a snapshot with the run's name that is not the run's is neither adopted nor deleted; a user's snapshot is never deleted", async () => {
    const d = await managedDisk();
    const r = run();
    const name = snapshotName(d.diskId, r);
    const poll = { updateIntervalInMs: 5 };
    const foreign = await arm().snapshots.createOrUpdate(
      d.rg,
      name,
      {
        location: world.arm.location,
        incremental: true,
        creationData: { createOption: "Copy", sourceResourceId: d.id },
        tags: { owner: "someone else" },
      },
      poll,
    );
    await expect(d.source.snapshotFor(d.diskId, r)).rejects.toThrow(/is not run .* snapshot .* left alone/);
    await expect(d.source.deleteSnapshot(foreign.id!)).rejects.toThrow(/not taken by diskdelta/);
    expect(await d.source.taggedSnapshots(d.diskId)).toEqual([]);
    expect((await world.arm.resources()).snapshots).toContain(foreign.id);
  });

  test("a resumed run adopts its snapshot even while ARM still provisions it", async () => {
    const d = await managedDisk();
    const r = run();
    // The PUT leaves, then the client dies: the snapshot exists, still Updating.
    const name = snapshotName(d.diskId, r);
    // submitted(): the initial request is sent, and nothing ever polls (never awaited).
    await arm()
      .snapshots.createOrUpdate(d.rg, name, {
        location: world.arm.location,
        incremental: true,
        creationData: { createOption: "Copy", sourceResourceId: d.id },
        tags: { diskdeltadisk: d.diskId, diskdeltarun: r },
      })
      .submitted();
    const puts = world.arm.count("Snapshots_CreateOrUpdate");
    const snap = await d.source.snapshotFor(d.diskId, r);
    expect(world.arm.count("Snapshots_CreateOrUpdate")).toBe(puts);
    expect(snap.id.endsWith(`/snapshots/${name}`)).toBe(true);
    await d.source.deleteSnapshot(snap.id);
  });

  test("a migrated disk's page-blob base is refused as a diff base (a resync), but can be read and deleted", async () => {
    const d = await managedDisk();
    const blob = await createDisk(4 * MiB, world.proxy.url);
    await blob.client.uploadPages(Buffer.alloc(512, 1), 0, 512);
    const ts = (await blob.client.createSnapshot()).snapshot!;
    const { migratedBase } = await import("../../lib/sources/managedDisk");
    const base = migratedBase(parseBlobUrl(blob.url).url, ts);
    const snap = await d.source.snapshotFor(d.diskId, run());
    const now = await d.source.open(snap.id);
    const old = await d.source.open(base);
    await expect(
      engine.storage.listDiff(now.address, { start: 0, end: 4 * MiB }, old.base),
    ).rejects.toMatchObject({
      statusCode: 409,
      code: "PreviousSnapshotOperationNotSupported",
    });
    expect((await engine.storage.read(old.address, { start: 0, end: 512 }))[0]).toBe(1);
    await now.close();
    await old.close();
    await d.source.deleteSnapshot(base);
    expect(await snapshotsIn(SOURCE_ACCOUNT, blob.container)).toEqual([]);
    await d.source.deleteSnapshot(snap.id);
  });
});

function parseSnapshot(id: string): { rg: string; name: string } {
  const m = /resourceGroups\/([^/]+)\/providers\/Microsoft\.Compute\/snapshots\/([^/]+)$/.exec(id)!;
  return { rg: m[1], name: m[2] };
}
