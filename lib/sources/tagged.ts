/**
 * Snapshots that diskdelta takes of page blobs (a disk's, or the backup blob's at a seal) carry
 * metadata naming their disk and run, so that a run cut short between "snapshot taken" and
 * "snapshot recorded" finds and adopts its own snapshot instead of taking another, and so that a
 * sweep can delete leaked ones. Guarantees: only snapshots tagged with this disk are ever
 * returned for deletion; user snapshots are never touched.
 */
import type { PageStore } from "../storage/port";
import type { BlobLocation } from "../storage/urls";

/** Metadata keys (Azure lowercases metadata names; these are lowercase already). */
export const DISK_TAG = "diskdeltadisk";
export const RUN_TAG = "diskdeltarun";

export interface TaggedSnapshot {
  id: string;
  runId: string;
}

export function tags(diskId: string, runId: string): Record<string, string> {
  return { [DISK_TAG]: diskId, [RUN_TAG]: runId };
}

export async function taggedSnapshots(
  storage: PageStore,
  blob: BlobLocation,
  diskId: string,
): Promise<TaggedSnapshot[]> {
  const found = await storage.listSnapshots(blob);
  return found
    .filter((s) => s.metadata[DISK_TAG] === diskId)
    .map((s) => ({ id: s.snapshot, runId: s.metadata[RUN_TAG] ?? "" }));
}

/** The run's tagged snapshot of `blob` if one exists (a crash after taking it), else a new one. */
export async function adoptOrTakeSnapshot(
  storage: PageStore,
  blob: BlobLocation,
  diskId: string,
  runId: string,
): Promise<string> {
  const existing = (await taggedSnapshots(storage, blob, diskId)).find((s) => s.runId === runId);
  if (existing) return existing.id;
  return storage.snapshot({ kind: "blob", location: blob }, tags(diskId, runId));
}
