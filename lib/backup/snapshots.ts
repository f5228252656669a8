/**
 * Snapshots that diskdelta takes carry metadata naming their disk and run, so that a run cut
 * short between "snapshot taken" and "snapshot recorded" finds and adopts its own snapshot
 * instead of taking another, and so that a sweep can delete leaked ones. Guarantees: only
 * snapshots tagged with this disk are ever deleted here; user snapshots are never touched.
 */
import type { ContainerClient, PageBlobClient } from "@azure/storage-blob";
import { isNotFound } from "../azure/errors";
import { withRetry, type RetryPolicy } from "../azure/retry";

/** Metadata keys (Azure lowercases metadata names; these are lowercase already). */
export const DISK_TAG = "diskdeltadisk";
export const RUN_TAG = "diskdeltarun";

export interface TaggedSnapshot {
  snapshot: string;
  runId: string;
}

export async function listTaggedSnapshots(
  container: ContainerClient,
  blob: string,
  diskId: string,
  policy: RetryPolicy,
): Promise<TaggedSnapshot[]> {
  return withRetry(policy, async () => {
    const found: TaggedSnapshot[] = [];
    for await (const item of container.listBlobsFlat({
      prefix: blob,
      includeSnapshots: true,
      includeMetadata: true,
    })) {
      if (item.name !== blob || !item.snapshot) continue;
      if (item.metadata?.[DISK_TAG] !== diskId) continue;
      found.push({ snapshot: item.snapshot, runId: item.metadata?.[RUN_TAG] ?? "" });
    }
    return found;
  });
}

/** Returns the run's tagged snapshot of `blob` if one exists, else takes one. */
export async function adoptOrTakeSnapshot(
  container: ContainerClient,
  blob: PageBlobClient,
  blobName: string,
  diskId: string,
  runId: string,
  policy: RetryPolicy,
): Promise<string> {
  const existing = (await listTaggedSnapshots(container, blobName, diskId, policy)).find(
    (s) => s.runId === runId,
  );
  if (existing) return existing.snapshot;
  const created = await withRetry(policy, () =>
    blob.createSnapshot({ metadata: { [DISK_TAG]: diskId, [RUN_TAG]: runId } }),
  );
  if (!created.snapshot) throw new Error(`the service returned no snapshot id for ${blob.url}`);
  return created.snapshot;
}

export async function deleteSnapshot(
  blob: PageBlobClient,
  snapshot: string,
  policy: RetryPolicy,
): Promise<void> {
  try {
    await withRetry(policy, () => blob.withSnapshot(snapshot).delete());
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}
