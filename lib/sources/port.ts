/**
 * The source port: what a run needs of the disk it protects, whatever kind of disk it is — a page
 * blob (an unmanaged disk, a VHD) or a managed disk (through Azure Resource Manager). Deliberately
 * narrow: take the run's snapshot (tagged with disk and run, adopted after a crash), list the
 * disk's tagged snapshots (the sweep), open a snapshot for reading (an address the storage port
 * reads, lists and copies from, and how a later diff names it as its base), delete a snapshot.
 * The run, fan-out, verify, digests and retention see sources only through this; one contract
 * suite (test/contract/source.ts) holds both kinds to it. The one addition beyond a disk's
 * source is `Sources.managed` (ManagedDiskAdmin): what registering a VM's disks and restoring as
 * a managed disk need of ARM, since use cases receive no ARM client of their own.
 */
import type { DiffBase, PageAddress, SasAddress } from "../storage/port";

export type SourceKind = "page-blob" | "managed-disk";

export interface SourceSnapshot {
  /** What the lineage stores: a blob snapshot's timestamp, or a snapshot's ARM resource id. */
  id: string;
  size: number;
  /** When it was taken (ISO), where `id` is not that time. */
  capturedAt?: string;
}

export interface OpenedSnapshot {
  /** Where reads, listings and server-side copies of this snapshot go. */
  address: PageAddress;
  /** How a diff names this snapshot as its base. */
  base: DiffBase;
  /**
   * Ends this reader's access: a managed disk's grant is revoked when its last reader in this
   * process closes — unless `keepAccess`, which a fanned-out run's planner and workers pass:
   * endGetAccess ends every SAS of the snapshot, so one worker's close would cut off the others
   * (on other instances); the run's sealer ends it (Source.endAccess) once every batch is done.
   * A no-op for page blobs. Never throws.
   */
  close(keepAccess?: boolean): Promise<void>;
}

export interface Source {
  readonly kind: SourceKind;
  /** The disk in messages: its URL or resource id (never a SAS). */
  readonly label: string;
  /** The role an access-denied answer is about, for messages. */
  readonly role: string;
  /** The run's snapshot: the one tagged with `runId` if it exists, else a new one. */
  snapshotFor(diskId: string, runId: string): Promise<SourceSnapshot>;
  /** Snapshots of this disk tagged by diskdelta, with the run that took each. */
  taggedSnapshots(diskId: string): Promise<Array<{ id: string; runId: string }>>;
  open(snapshotId: string): Promise<OpenedSnapshot>;
  /** Deletes a snapshot; one already gone is not an error. */
  deleteSnapshot(snapshotId: string): Promise<void>;
  /** Ends every read access to a snapshot (managed disks: endGetAccess), whoever opened it; a no-op for page blobs. */
  endAccess(snapshotId: string): Promise<void>;
}

/** A source as registered: the record fields it becomes, and its size now. */
export interface InspectedSource {
  kind: SourceKind;
  /** The page blob URL, or (managed disk) its resource id. */
  sourceUrl: string;
  sourceDiskId?: string;
  size: number;
}

/** A managed disk as ARM describes it (resource ids and properties only, never a SAS). */
export interface ManagedDiskInfo {
  id: string;
  name: string;
  subscription: string;
  resourceGroup: string;
  location: string;
  sku?: string;
  zones?: string[];
  /** Content bytes (diskSizeBytes); its export is this plus the 512-byte VHD footer. */
  sizeBytes: number;
  osType?: string;
  hyperVGeneration?: string;
  diskState?: string;
  managedBy?: string;
  tags: Record<string, string>;
}

/** The managed disks of a VM, as its storage profile names them. */
export interface VmDisks {
  vmId: string;
  vmName: string;
  disks: Array<{ role: "os" | "data"; lun?: number; id: string }>;
  /** Disks of the VM that are not managed-disk resources (ephemeral OS disk, unmanaged VHD), and why. */
  skipped: Array<{ name: string; reason: string }>;
}

/** A new empty disk for an upload (`createOption: Upload`): content plus footer, as `uploadSizeBytes`. */
export interface UploadDiskSpec {
  id: string;
  location: string;
  uploadSizeBytes: number;
  sku?: string;
  zone?: string;
  osType?: string;
  hyperVGeneration?: string;
  tags: Record<string, string>;
}

/** An upload disk opened for writing: its SAS address, closed (endGetAccess) to make it an ordinary disk. */
export interface OpenedUpload {
  address: SasAddress;
  /** Ends the upload; unlike a snapshot's close, a failure here is thrown (the disk is not usable until it succeeds). */
  close(): Promise<void>;
}

/**
 * What registering a VM's disks and restoring as a managed disk need of Azure Resource Manager
 * beyond one disk's Source. Present when ARM access is configured.
 */
export interface ManagedDiskAdmin {
  vmDisks(vmId: string, field: string): Promise<VmDisks>;
  /** The disk, or undefined when it does not exist (a missing resource group is an error). */
  getDisk(id: string): Promise<ManagedDiskInfo | undefined>;
  createUploadDisk(spec: UploadDiskSpec): Promise<ManagedDiskInfo>;
  openForUpload(id: string): Promise<OpenedUpload>;
  /** Deletes a disk that carries tag `guardTag` (any other disk is refused); a missing one is not an error. */
  deleteDisk(id: string, guardTag: string): Promise<void>;
}

/** The sources of the app: the port of a registered disk, and checking one before it is registered. */
export interface Sources {
  of(disk: { id: string; sourceUrl: string; sourceDiskId?: string }): Source;
  /**
   * Checks what a user gave as a disk's source (a page blob URL or a managed disk's resource id):
   * it exists, is reachable with the identity's roles, and is a kind diskdelta can snapshot and
   * diff. Every problem is an InputError on `field`, naming the missing role on access denied.
   */
  inspect(raw: string, field: string): Promise<InspectedSource>;
  /** Managed-disk operations beyond one disk's source (VM registration, restore as a managed disk). */
  readonly managed?: ManagedDiskAdmin;
}
