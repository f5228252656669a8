/**
 * A managed disk as a source, through Azure Resource Manager (@azure/arm-compute, lib/azure/arm.ts).
 * A run's snapshot is an incremental snapshot (`incremental: true`, `creationData {createOption:
 * Copy, sourceResourceId}`) in the disk's resource group (or DISKDELTA_SNAPSHOT_RESOURCE_GROUP),
 * named after the disk and the run and tagged with both; it is read through a read SAS from
 * `beginGetAccess`, and a later diff names it by that SAS URL (`x-ms-previous-snapshot-url`).
 *
 * Guarantees:
 * - a run takes at most one snapshot: its name is derived from disk and run, so a run resumed after
 *   a crash finds its own (checking the tags: a snapshot of that name that is not the run's is never
 *   touched) and waits for it instead of taking another (ARM allows 7 per disk per 5 minutes);
 * - a snapshot is handed out only once readable: provisioning succeeded and, for disk types that
 *   copy in the background (Premium SSD v2, Ultra), `completionPercent` reached 100;
 * - SAS URLs are Secrets: never logged, stored or returned; the lineage gets resource ids only.
 *   Opens of one snapshot in this process share one grant, renewed at three quarters of its
 *   lifetime while anyone still reads, and revoked (`endGetAccess`) when the last reader closes;
 *   the sweep's listing revokes grants that dead processes left open on this disk's snapshots;
 * - only snapshots tagged with this disk (and created from it) are listed for the sweep or deleted.
 *
 * A disk migrated from a page blob (lib/disks/migrate.ts) keeps its last page-blob snapshot as its
 * base until the first managed run is sealed; that base is named by the page blob's URL and
 * snapshot time. A diff from it is refused the way the service refuses a diff from another
 * blob's snapshot (409 PreviousSnapshotOperationNotSupported), so that run compares instead (a
 * resync), and deleting it deletes that page-blob snapshot.
 */
import type { Disk, HyperVGeneration, OperatingSystemTypes, Snapshot } from "@azure/arm-compute";
import {
  armErrorInfo,
  parseResourceId,
  resourceIdOf,
  sameResource,
  tryParseResourceId,
  type ArmClients,
  type ResourceId,
} from "../azure/arm";
import { InputError } from "../core/errors";
import type { Logger } from "../core/logger";
import { realSleep } from "../core/retry";
import { Secret, withoutQuery } from "../core/secret";
import { StorageError } from "../storage/errors";
import type { PageStore, SasAddress } from "../storage/port";
import { parseBlobUrl } from "../storage/urls";
import { ArmError, armError, describeArmError, ROLES } from "./armErrors";
import type { ManagedDisks } from "./catalog";
import type {
  InspectedSource,
  ManagedDiskInfo,
  OpenedSnapshot,
  OpenedUpload,
  Source,
  SourceSnapshot,
  UploadDiskSpec,
  VmDisks,
} from "./port";
import { DISK_TAG, RUN_TAG } from "./tagged";

/** A managed disk exports as a fixed VHD: its content plus this 512-byte footer. */
export const VHD_FOOTER = 512;

export const MANAGED_DISK_ROLE = `${ROLES.diskBackupReader.name} on the disk's resource group and ${ROLES.diskSnapshotContributor.name} on the snapshots' group`;

export interface ManagedDiskSettings {
  /** Where snapshots go; undefined: each disk's own resource group (same subscription and region as ARM requires). */
  snapshotResourceGroup?: string;
  /** Lifetime of a SAS from beginGetAccess. */
  accessSeconds: number;
  log: Logger;
  /** How a wait for a snapshot's background copy sleeps (tests replace it). */
  sleep?: (ms: number) => Promise<void>;
}

/** `<disk id, at most 40 characters>-<run id>`: unique per run, within Compute's 80-character names. */
export function snapshotName(diskId: string, runId: string): string {
  return `${diskId.slice(0, 40)}-${runId.toLowerCase()}`.replace(/[^a-z0-9_.-]/g, "-");
}

/** How a base left by a migration from a page blob is named: its blob URL and snapshot time (no credential). */
export function migratedBase(pageBlobUrl: string, snapshot: string): string {
  return `${pageBlobUrl}?snapshot=${encodeURIComponent(snapshot)}`;
}

function parseMigratedBase(id: string): { url: string; snapshot: string } | undefined {
  const m = /^(https?:\/\/[^?]+)\?snapshot=([^&]+)$/.exec(id);
  return m ? { url: m[1], snapshot: decodeURIComponent(m[2]) } : undefined;
}

function isNotFound(err: unknown): boolean {
  const { status, code } = armErrorInfo(err);
  return status === 404 && code !== "ResourceGroupNotFound" && code !== "SubscriptionNotFound";
}

function infoOf(d: Disk, ref: ResourceId): ManagedDiskInfo {
  return {
    id: d.id ?? ref.id,
    name: d.name ?? ref.name,
    subscription: ref.subscription,
    resourceGroup: ref.resourceGroup,
    location: d.location,
    sku: d.sku?.name,
    zones: d.zones,
    sizeBytes: d.diskSizeBytes ?? (d.diskSizeGB ?? 0) * 1024 ** 3,
    osType: d.osType,
    hyperVGeneration: d.hyperVGeneration,
    diskState: d.diskState,
    managedBy: d.managedBy,
    tags: d.tags ?? {},
  };
}

/** One grant of access shared by every open of a resource in this process. */
interface Grant {
  ready: Promise<void>;
  url?: Secret;
  refs: number;
  timer?: NodeJS.Timeout;
}

/**
 * The grants this process holds, by resource id and access. Opening a resource already open here
 * joins its grant; the last close revokes it. A new grant waits for a revoke still in flight,
 * because endGetAccess ends every SAS of the resource, a new one included.
 */
class Grants {
  private readonly open = new Map<string, Grant>();
  private readonly revoking = new Map<string, Promise<void>>();

  constructor(
    private readonly accessSeconds: number,
    private readonly log: Logger,
  ) {}

  holds(id: string): boolean {
    return [...this.open.keys()].some((k) => k.startsWith(`${id.toLowerCase()}#`));
  }

  async acquire(
    id: string,
    access: "Read" | "Write",
    grant: () => Promise<Secret>,
    revoke: () => Promise<void>,
  ): Promise<{ url: () => Secret; release: (keepAccess?: boolean) => Promise<void> }> {
    const key = `${id.toLowerCase()}#${access}`;
    let g = this.open.get(key);
    if (!g) {
      await this.revoking.get(key);
      g = this.open.get(key);
    }
    if (!g) {
      const fresh: Grant = { refs: 0, ready: Promise.resolve() };
      fresh.ready = grant().then((url) => {
        fresh.url = url;
        this.schedule(fresh, grant, id);
      });
      fresh.ready.catch(() => {
        if (this.open.get(key) === fresh) this.open.delete(key);
      });
      this.open.set(key, fresh);
      g = fresh;
    }
    g.refs++;
    const held = g;
    try {
      await held.ready;
    } catch (err) {
      held.refs--;
      throw err;
    }
    let released = false;
    return {
      url: () => held.url!,
      release: async (keepAccess?: boolean) => {
        if (released) return;
        released = true;
        if (--held.refs > 0) return;
        if (this.open.get(key) === held) this.open.delete(key);
        clearTimeout(held.timer);
        // Other instances may read through their own SAS of it: whoever ends the run ends the access.
        if (keepAccess) return;
        const done = revoke()
          .catch((err: unknown) => this.log.warn(`could not end access to ${id}: ${(err as Error).message}`))
          .finally(() => {
            if (this.revoking.get(key) === done) this.revoking.delete(key);
          });
        this.revoking.set(key, done);
        await done;
      },
    };
  }

  /** Forgets a resource being deleted (its grants end with it). */
  drop(id: string): void {
    for (const [key, g] of this.open)
      if (key.startsWith(`${id.toLowerCase()}#`)) {
        clearTimeout(g.timer);
        this.open.delete(key);
      }
  }

  /** Renews before expiry, so a long read never meets an expired SAS; readers see the new URL at once. */
  private schedule(
    g: Grant,
    grant: () => Promise<Secret>,
    id: string,
    inMs = this.accessSeconds * 750,
  ): void {
    g.timer = setTimeout(() => {
      if (g.refs <= 0) return;
      grant().then(
        (url) => {
          g.url = url;
          this.schedule(g, grant, id);
        },
        (err: unknown) => {
          this.log.warn(`could not renew access to ${id}: ${(err as Error).message}; trying again`);
          this.schedule(g, grant, id, Math.max(1000, this.accessSeconds * 50));
        },
      );
    }, inMs);
    g.timer.unref();
  }
}

export class ManagedDiskCatalog implements ManagedDisks {
  readonly grants: Grants;

  constructor(
    readonly arm: ArmClients,
    readonly storage: PageStore,
    readonly settings: ManagedDiskSettings,
  ) {
    this.grants = new Grants(settings.accessSeconds, settings.log);
  }

  get log(): Logger {
    return this.settings.log;
  }

  sleep(ms: number): Promise<void> {
    return (this.settings.sleep ?? realSleep)(ms);
  }

  of(_diskId: string, resourceId: string): Source {
    return new ManagedDiskSource(this, parseResourceId(resourceId, "disks", "source"));
  }

  snapshotGroup(disk: ResourceId): string {
    return this.settings.snapshotResourceGroup ?? disk.resourceGroup;
  }

  async inspect(raw: string, field: string): Promise<InspectedSource> {
    const ref = parseResourceId(raw, "disks", field, {
      virtualMachines: "give one of its disks, or register them all with {{vm}}",
      snapshots: "give the id of the disk it was taken of",
    });
    const client = this.arm.compute(ref.subscription);
    let disk: Disk;
    try {
      disk = await client.disks.get(ref.resourceGroup, ref.name);
    } catch (err) {
      throw InputError.field(field, describeArmError(err, `managed disk ${ref.id}`).message);
    }
    const id = disk.id ?? ref.id;
    if (disk.diskState === "ReadyToUpload" || disk.diskState === "ActiveUpload")
      throw InputError.field(
        field,
        `managed disk ${id} is being uploaded (state ${disk.diskState}): register it once its upload is closed`,
      );
    if (disk.creationData?.logicalSectorSize === 4096)
      throw InputError.field(
        field,
        `managed disk ${id} has 4096-byte logical sectors: its snapshots export as VHDX, which diskdelta does not read page by page`,
      );
    if (disk.diskSizeBytes === undefined && disk.diskSizeGB === undefined)
      throw InputError.field(field, `managed disk ${id} reports no size; it cannot be snapshotted yet`);
    // Snapshots are made, read and deleted in this group: check the identity may at least list them.
    const group = this.snapshotGroup(ref);
    try {
      await client.snapshots.listByResourceGroup(group).byPage().next();
    } catch (err) {
      throw InputError.field(
        field,
        describeArmError(err, `the snapshots of managed disk ${id} (resource group ${group})`, {
          action: "Microsoft.Compute/snapshots/read",
          scope: `/subscriptions/${ref.subscription}/resourceGroups/${group}`,
        }).message,
      );
    }
    const size = infoOf(disk, ref).sizeBytes + VHD_FOOTER;
    return { kind: "managed-disk", sourceUrl: id, sourceDiskId: id, size };
  }

  async vmDisks(vmId: string, field: string): Promise<VmDisks> {
    const ref = parseResourceId(vmId, "virtualMachines", field, {
      disks: "register one managed disk with {{source}}",
    });
    let vm;
    try {
      vm = await this.arm.compute(ref.subscription).virtualMachines.get(ref.resourceGroup, ref.name);
    } catch (err) {
      throw InputError.field(field, describeArmError(err, `virtual machine ${ref.id}`).message);
    }
    const profile = vm.storageProfile;
    const out: VmDisks = { vmId: vm.id ?? ref.id, vmName: vm.name ?? ref.name, disks: [], skipped: [] };
    const os = profile?.osDisk;
    if (os) {
      if (os.diffDiskSettings?.option)
        out.skipped.push({
          name: os.name ?? "OS disk",
          reason:
            "an ephemeral OS disk: it lives on the host, is not a managed-disk resource and has no snapshots",
        });
      else if (os.managedDisk?.id) out.disks.push({ role: "os", id: os.managedDisk.id });
      else
        out.skipped.push({
          name: os.name ?? "OS disk",
          reason: `an unmanaged disk${os.vhd?.uri ? ` (${withoutQuery(os.vhd.uri)})` : ""}: register its page blob URL as a source`,
        });
    }
    for (const d of profile?.dataDisks ?? []) {
      if (d.managedDisk?.id) out.disks.push({ role: "data", lun: d.lun, id: d.managedDisk.id });
      else
        out.skipped.push({
          name: d.name ?? `LUN ${d.lun}`,
          reason: `an unmanaged disk${d.vhd?.uri ? ` (${withoutQuery(d.vhd.uri)})` : ""}: register its page blob URL as a source`,
        });
    }
    return out;
  }

  async getDisk(id: string): Promise<ManagedDiskInfo | undefined> {
    const ref = parseResourceId(id, "disks", "source");
    try {
      return infoOf(await this.arm.compute(ref.subscription).disks.get(ref.resourceGroup, ref.name), ref);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw armError(err, `managed disk ${ref.id}`);
    }
  }

  async createUploadDisk(spec: UploadDiskSpec): Promise<ManagedDiskInfo> {
    const ref = parseResourceId(spec.id, "disks", "name");
    try {
      const disk = await this.arm.compute(ref.subscription).disks.createOrUpdate(
        ref.resourceGroup,
        ref.name,
        {
          location: spec.location,
          tags: spec.tags,
          ...(spec.sku ? { sku: { name: spec.sku } } : {}),
          ...(spec.zone ? { zones: [spec.zone] } : {}),
          ...(spec.osType ? { osType: spec.osType as OperatingSystemTypes } : {}),
          ...(spec.hyperVGeneration ? { hyperVGeneration: spec.hyperVGeneration as HyperVGeneration } : {}),
          creationData: { createOption: "Upload", uploadSizeBytes: spec.uploadSizeBytes },
        },
        this.arm.poll,
      );
      return infoOf(disk, ref);
    } catch (err) {
      throw armError(err, `the new managed disk ${ref.id}`);
    }
  }

  async openForUpload(id: string): Promise<OpenedUpload> {
    const ref = parseResourceId(id, "disks", "name");
    const disks = this.arm.compute(ref.subscription).disks;
    const what = `managed disk ${ref.id}`;
    const held = await this.grants.acquire(
      ref.id,
      "Write",
      () =>
        this.accessSas(
          () => disks.grantAccess(ref.resourceGroup, ref.name, this.access("Write"), this.arm.poll),
          what,
        ),
      async () => {
        try {
          await disks.revokeAccess(ref.resourceGroup, ref.name, this.arm.poll);
        } catch (err) {
          throw armError(err, what);
        }
      },
    );
    let closed: Promise<void> | undefined;
    return {
      address: sasAddress(held.url, ref.id),
      // The upload is finished only when endGetAccess succeeds: retry it here, then fail loudly.
      close: () =>
        (closed ??= (async () => {
          await held.release();
          const d = await this.getDisk(ref.id);
          if (d?.diskState === "ActiveUpload") {
            await disks.revokeAccess(ref.resourceGroup, ref.name, this.arm.poll).catch((err: unknown) => {
              throw armError(err, what);
            });
          }
        })()),
    };
  }

  async deleteDisk(id: string, guardTag: string): Promise<void> {
    const ref = parseResourceId(id, "disks", "name");
    const disks = this.arm.compute(ref.subscription).disks;
    const what = `managed disk ${ref.id}`;
    const disk = await this.getDisk(ref.id);
    if (!disk) return;
    if (disk.tags[guardTag] === undefined)
      throw new Error(`${what} does not carry diskdelta's tag ${guardTag}; it is not deleted`);
    this.grants.drop(ref.id);
    try {
      if (disk.diskState === "ActiveUpload" || disk.diskState === "ActiveSAS")
        await disks.revokeAccess(ref.resourceGroup, ref.name, this.arm.poll);
      await disks.delete(ref.resourceGroup, ref.name, this.arm.poll);
    } catch (err) {
      if (!isNotFound(err)) throw armError(err, what);
    }
  }

  access(access: "Read" | "Write") {
    return { access, durationInSeconds: this.settings.accessSeconds };
  }

  /** The accessSAS of a grant, as a Secret; a grant without one is an error (never a URL in a message). */
  async accessSas(grant: () => Promise<{ accessSAS?: string }>, what: string): Promise<Secret> {
    let result;
    try {
      result = await grant();
    } catch (err) {
      throw armError(err, what);
    }
    if (!result.accessSAS) throw new Error(`${what}: beginGetAccess returned no access URL`);
    return new Secret(result.accessSAS);
  }
}

/**
 * A snapshot that no longer exists, answered as the service answers for one: reading it is a 404,
 * and a diff from it is refused with the documented PreviousSnapshotNotFound (409), so a run whose
 * base someone deleted compares instead (a resync) and verify falls back to the digests.
 */
function gone(id: string): OpenedSnapshot {
  const missing = (code: string, status: number, detail: string) =>
    new StorageError("read", id, status, code, detail);
  return {
    address: {
      kind: "sas",
      label: id,
      get url(): Secret {
        throw missing("SnapshotNotFound", 404, "the snapshot was deleted");
      },
    },
    base: {
      get previousUrl(): Secret {
        throw new StorageError(
          "list the page-range diff of",
          id,
          409,
          "PreviousSnapshotNotFound",
          "the base snapshot was deleted",
        );
      },
    },
    close: async () => undefined,
  };
}

/** A SAS address whose URL is read at each request, so a renewed grant takes effect at once. */
function sasAddress(url: () => Secret, label: string): SasAddress {
  return {
    kind: "sas",
    label,
    get url() {
      return url();
    },
  };
}

export class ManagedDiskSource implements Source {
  readonly kind = "managed-disk" as const;
  readonly role = MANAGED_DISK_ROLE;
  readonly label: string;

  constructor(
    private readonly catalog: ManagedDiskCatalog,
    private readonly disk: ResourceId,
  ) {
    this.label = disk.id;
  }

  private get client() {
    return this.catalog.arm.compute(this.disk.subscription);
  }

  private get group(): string {
    return this.catalog.snapshotGroup(this.disk);
  }

  private async getSnapshot(group: string, name: string): Promise<Snapshot | undefined> {
    try {
      return await this.client.snapshots.get(group, name);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw armError(err, `snapshot ${resourceIdOf(this.disk.subscription, group, "snapshots", name)}`);
    }
  }

  private ours(s: Snapshot, diskId: string): boolean {
    return s.tags?.[DISK_TAG] === diskId && sameResource(s.creationData?.sourceResourceId, this.disk.id);
  }

  async snapshotFor(diskId: string, runId: string): Promise<SourceSnapshot> {
    const group = this.group;
    const name = snapshotName(diskId, runId);
    const id = resourceIdOf(this.disk.subscription, group, "snapshots", name);
    let snap = await this.getSnapshot(group, name);
    if (snap && !(this.ours(snap, diskId) && snap.tags?.[RUN_TAG] === runId))
      throw new Error(
        `snapshot ${id} exists and is not run ${runId}'s snapshot of ${this.disk.id} (its tags say otherwise); it is left alone`,
      );
    if (snap?.provisioningState === "Failed") {
      this.catalog.log.warn(`snapshot ${id} of an earlier try failed to provision; taking it again`);
      await this.deleteSnapshot(id);
      snap = undefined;
    }
    if (!snap) {
      let location: string;
      try {
        location = (await this.client.disks.get(this.disk.resourceGroup, this.disk.name)).location;
      } catch (err) {
        throw armError(err, `managed disk ${this.disk.id}`);
      }
      try {
        // The PUT leaves as soon as the poller exists; a crash from here on leaves a snapshot that
        // completes anyway, and that the retry of this run finds by its name and tags.
        snap = await this.client.snapshots.createOrUpdate(
          group,
          name,
          {
            location,
            tags: { [DISK_TAG]: diskId, [RUN_TAG]: runId },
            incremental: true,
            creationData: { createOption: "Copy", sourceResourceId: this.disk.id },
          },
          this.catalog.arm.poll,
        );
      } catch (err) {
        throw armError(err, `an incremental snapshot of managed disk ${this.disk.id} (as ${id})`);
      }
    }
    snap = await this.readable(group, name, snap);
    const size = (snap.diskSizeBytes ?? 0) + VHD_FOOTER;
    return { id: snap.id ?? id, size, capturedAt: snap.timeCreated?.toISOString() };
  }

  /** Waits until the snapshot is provisioned and (background-copy disk types) filled: only then can it be read. */
  private async readable(group: string, name: string, first: Snapshot): Promise<Snapshot> {
    let snap = first;
    const started = Date.now();
    let logged = started;
    for (;;) {
      if (snap.provisioningState === "Failed")
        throw new Error(`snapshot ${snap.id ?? name} of ${this.disk.id} failed to provision`);
      if (snap.copyCompletionError)
        throw new Error(
          `snapshot ${snap.id ?? name} of ${this.disk.id}: its background copy failed (${snap.copyCompletionError.errorCode}: ${snap.copyCompletionError.errorMessage})`,
        );
      const done = (snap.completionPercent ?? 100) >= 100;
      if (snap.provisioningState === "Succeeded" && done) return snap;
      if (Date.now() - logged > 30_000) {
        logged = Date.now();
        this.catalog.log.info(
          `waiting for snapshot ${snap.id ?? name}: ${snap.provisioningState ?? "?"}, ${snap.completionPercent ?? 0}% copied`,
        );
      }
      await this.catalog.sleep(this.catalog.arm.settings.pollMs);
      const next = await this.getSnapshot(group, name);
      if (!next)
        throw new Error(`snapshot ${snap.id ?? name} of ${this.disk.id} disappeared while it was made`);
      snap = next;
    }
  }

  async taggedSnapshots(diskId: string): Promise<Array<{ id: string; runId: string }>> {
    const group = this.group;
    const found: Array<{ id: string; runId: string }> = [];
    try {
      for await (const s of this.client.snapshots.listByResourceGroup(group)) {
        if (!s.id || !this.ours(s, diskId)) continue;
        found.push({ id: s.id, runId: s.tags?.[RUN_TAG] ?? "" });
        // A grant open here with no reader in this process was left by a process that died; the
        // sweep runs while this disk's run holds the disk, so nobody else backs it up now.
        if (s.diskState === "ActiveSAS" && !this.catalog.grants.holds(s.id)) {
          this.catalog.log.info(`ending the access a dead process left open on snapshot ${s.id}`);
          const ref = tryParseResourceId(s.id);
          if (ref)
            await this.client.snapshots
              .revokeAccess(ref.resourceGroup, ref.name, this.catalog.arm.poll)
              .catch((err: unknown) =>
                this.catalog.log.warn(`could not end access to ${s.id}: ${(err as Error).message}`),
              );
        }
      }
    } catch (err) {
      throw new ArmError(
        describeArmError(err, `the snapshots of managed disk ${this.disk.id} (resource group ${group})`, {
          action: "Microsoft.Compute/snapshots/read",
          scope: `/subscriptions/${this.disk.subscription}/resourceGroups/${group}`,
        }),
        err,
      );
    }
    return found;
  }

  async open(snapshotId: string): Promise<OpenedSnapshot> {
    const migrated = parseMigratedBase(snapshotId);
    if (migrated) return this.openMigratedBase(migrated.url, migrated.snapshot);
    const ref = tryParseResourceId(snapshotId);
    if (!ref || ref.type !== "snapshots")
      throw InputError.field(
        "point",
        `${snapshotId} is not a snapshot of managed disk ${this.disk.id} (a snapshot of the page blob this disk was before its migration?)`,
      );
    const snapshots = this.client.snapshots;
    const what = `snapshot ${ref.id}`;
    let held;
    try {
      held = await this.catalog.grants.acquire(
        ref.id,
        "Read",
        () =>
          this.catalog.accessSas(
            () =>
              snapshots.grantAccess(
                ref.resourceGroup,
                ref.name,
                this.catalog.access("Read"),
                this.catalog.arm.poll,
              ),
            what,
          ),
        async () => {
          try {
            await snapshots.revokeAccess(ref.resourceGroup, ref.name, this.catalog.arm.poll);
          } catch (err) {
            if (!isNotFound(err)) throw armError(err, what);
          }
        },
      );
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return gone(ref.id);
      throw err;
    }
    const url = held.url;
    const base = {
      get previousUrl() {
        return url();
      },
    };
    return { address: sasAddress(url, ref.id), base, close: (keepAccess) => held.release(keepAccess) };
  }

  /** The page-blob base a migration left (see the module comment): readable, never a diff base for this disk. */
  private async openMigratedBase(url: string, snapshot: string): Promise<OpenedSnapshot> {
    const location = parseBlobUrl(url, "source");
    const label = `snapshot ${snapshot} of page blob ${url}`;
    const disk = this.disk.id;
    return {
      address: { kind: "blob", location, snapshot },
      base: {
        get previousUrl(): Secret {
          throw new StorageError(
            "list the page-range diff of",
            disk,
            409,
            "PreviousSnapshotOperationNotSupported",
            `the base is ${label}, which this disk was migrated from; a managed disk cannot be diffed against it`,
          );
        },
      },
      close: async () => undefined,
    };
  }

  async endAccess(snapshotId: string): Promise<void> {
    const ref = tryParseResourceId(snapshotId);
    if (parseMigratedBase(snapshotId) || !ref || ref.type !== "snapshots") return;
    const snap = await this.getSnapshot(ref.resourceGroup, ref.name);
    if (snap?.diskState !== "ActiveSAS") return;
    this.catalog.grants.drop(ref.id);
    try {
      await this.client.snapshots.revokeAccess(ref.resourceGroup, ref.name, this.catalog.arm.poll);
    } catch (err) {
      if (!isNotFound(err)) throw armError(err, `snapshot ${ref.id}`);
    }
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    const migrated = parseMigratedBase(snapshotId);
    if (migrated) {
      await this.catalog.storage.delete({
        kind: "blob",
        location: parseBlobUrl(migrated.url, "source"),
        snapshot: migrated.snapshot,
      });
      return;
    }
    const ref = tryParseResourceId(snapshotId);
    if (!ref || ref.type !== "snapshots")
      throw new Error(`${snapshotId} is not a managed-disk snapshot of ${this.disk.id}; not deleted`);
    const snap = await this.getSnapshot(ref.resourceGroup, ref.name);
    if (!snap) return;
    if (
      snap.tags?.[DISK_TAG] === undefined ||
      !sameResource(snap.creationData?.sourceResourceId, this.disk.id)
    )
      throw new Error(`snapshot ${ref.id} was not taken by diskdelta of ${this.disk.id}; it is not deleted`);
    this.catalog.grants.drop(ref.id);
    const snapshots = this.client.snapshots;
    try {
      if (snap.diskState === "ActiveSAS")
        await snapshots.revokeAccess(ref.resourceGroup, ref.name, this.catalog.arm.poll);
      await snapshots.delete(ref.resourceGroup, ref.name, this.catalog.arm.poll);
    } catch (err) {
      if (!isNotFound(err)) throw armError(err, `snapshot ${ref.id}`);
    }
  }
}
