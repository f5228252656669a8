/**
 * The app's sources: the port of each registered disk by its kind, and checking a new one. A
 * source given as `/subscriptions/…/providers/Microsoft.Compute/disks/…` is a managed disk (the
 * rule the infra's templates use too); anything else is a page blob URL.
 */
import { InputError } from "../core/errors";
import type { PageStore } from "../storage/port";
import { parseBlobUrl, type HostPolicy } from "../storage/urls";
import { inspectPageBlob, PageBlobSource } from "./pageBlob";
import type { InspectedSource, ManagedDiskAdmin, Source, Sources } from "./port";

/** A managed disk's kind of source, built by the composition root when ARM is configured. */
export interface ManagedDisks extends ManagedDiskAdmin {
  of(diskId: string, resourceId: string): Source;
  inspect(resourceId: string, field: string): Promise<InspectedSource>;
}

export function isResourceId(raw: string): boolean {
  return /^\/subscriptions\//i.test(raw.trim());
}

export class SourceCatalog implements Sources {
  constructor(
    private readonly storage: PageStore,
    private readonly hosts: HostPolicy,
    readonly managed?: ManagedDisks,
  ) {}

  of(disk: { id: string; sourceUrl: string; sourceDiskId?: string }): Source {
    if (disk.sourceDiskId) {
      if (!this.managed)
        throw new Error(
          `disk ${disk.id} is a managed disk, and no Azure Resource Manager access is configured`,
        );
      return this.managed.of(disk.id, disk.sourceDiskId);
    }
    return new PageBlobSource(this.storage, parseBlobUrl(disk.sourceUrl, "source"));
  }

  inspect(raw: string, field: string): Promise<InspectedSource> {
    if (isResourceId(raw)) {
      if (!this.managed)
        throw InputError.field(
          field,
          "managed disks need Azure Resource Manager access, which is not configured here",
        );
      return this.managed.inspect(raw.trim(), field);
    }
    return inspectPageBlob(this.storage, raw, field, this.hosts);
  }
}
