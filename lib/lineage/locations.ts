/**
 * Where a registered disk's blobs are, derived from its record: the source page blob (for a disk
 * registered as a page blob) and the backup blob. Records hold URLs without credentials; parsing
 * them again here can only fail on a row edited by hand.
 */
import { blobLocation, parseAccountUrl, parseBlobUrl, type BlobLocation } from "../storage/urls";
import type { DiskRecord } from "./types";

export function backupLocation(
  disk: Pick<DiskRecord, "backupAccountUrl" | "backupContainer" | "backupBlob">,
): BlobLocation {
  return blobLocation(
    parseAccountUrl(disk.backupAccountUrl, "backupAccount"),
    disk.backupContainer,
    disk.backupBlob,
  );
}

/** The source page blob of a disk registered as one; undefined for a managed disk. */
export function sourceBlobLocation(
  disk: Pick<DiskRecord, "sourceUrl" | "sourceDiskId">,
): BlobLocation | undefined {
  if (disk.sourceDiskId) return undefined;
  return parseBlobUrl(disk.sourceUrl, "source");
}

/** The restore point a run (r-…) or a restore (rs-…) seals is named after it: p-<its time and suffix>. */
export function pointIdOf(runId: string): string {
  return `p-${runId.slice(runId.indexOf("-") + 1)}`;
}
