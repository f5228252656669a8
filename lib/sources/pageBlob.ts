/**
 * A page blob as a source (Microsoft's procedure for unmanaged disks, and VHD images): snapshots
 * are blob snapshots tagged with metadata, a snapshot is read through the configured credentials,
 * and a diff names its base by snapshot id (`prevsnapshot`).
 */
import { InputError } from "../core/errors";
import { describeStorageError } from "../storage/errors";
import type { PageStore } from "../storage/port";
import { parseBlobUrl, type BlobLocation, type HostPolicy } from "../storage/urls";
import type { InspectedSource, OpenedSnapshot, Source, SourceSnapshot } from "./port";
import { adoptOrTakeSnapshot, taggedSnapshots } from "./tagged";

export const PAGE_BLOB_ROLE = "Storage Blob Data Contributor";

export class PageBlobSource implements Source {
  readonly kind = "page-blob" as const;
  readonly role = PAGE_BLOB_ROLE;
  readonly label: string;

  constructor(
    private readonly storage: PageStore,
    readonly location: BlobLocation,
  ) {
    this.label = location.url;
  }

  async snapshotFor(diskId: string, runId: string): Promise<SourceSnapshot> {
    const id = await adoptOrTakeSnapshot(this.storage, this.location, diskId, runId);
    const props = await this.storage.properties({ kind: "blob", location: this.location, snapshot: id });
    if (!props) throw new Error(`snapshot ${id} of ${this.label} disappeared right after it was taken`);
    return { id, size: props.size };
  }

  taggedSnapshots(diskId: string): Promise<Array<{ id: string; runId: string }>> {
    return taggedSnapshots(this.storage, this.location, diskId);
  }

  async open(snapshotId: string): Promise<OpenedSnapshot> {
    return {
      address: { kind: "blob", location: this.location, snapshot: snapshotId },
      base: { snapshot: snapshotId },
      close: async () => undefined,
    };
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    await this.storage.delete({ kind: "blob", location: this.location, snapshot: snapshotId });
  }

  async endAccess(): Promise<void> {
    // A page blob's snapshot is read with the account's own credentials: no grant to end.
  }
}

/** Checks a page blob given as a disk's source: a URL on an accepted host, an existing page blob, reachable. */
export async function inspectPageBlob(
  storage: PageStore,
  raw: string,
  field: string,
  hosts: HostPolicy,
): Promise<InspectedSource> {
  const location = parseBlobUrl(raw, field, hosts);
  let props;
  try {
    props = await storage.properties({ kind: "blob", location });
  } catch (err) {
    throw InputError.field(field, describeStorageError(err, location.url, PAGE_BLOB_ROLE));
  }
  if (!props) throw InputError.field(field, `${location.url} was not found (BlobNotFound)`);
  if (props.blobType !== "PageBlob") {
    throw InputError.field(
      field,
      `${location.url} is a ${props.blobType ?? "non-page"} blob; diskdelta protects page blobs (VM disks) and managed disks`,
    );
  }
  return { kind: "page-blob", sourceUrl: location.url, size: props.size };
}
