/**
 * The lineage in memory, for simulations and unit tests: the same contract as the table store
 * (test/contract/lineage.ts holds both to it) — ETag-guarded updates that fail with
 * ConflictError, adds that never overwrite, runs and points listed newest first by the same key,
 * batches counted once. Records are copied in and out, so a caller mutating what it got back
 * changes nothing stored.
 */
import { ConflictError, NotFoundError } from "../core/errors";
import { newestFirstKey } from "./ids";
import type {
  BatchCounts,
  BatchId,
  BatchProgress,
  DiskRecord,
  Lineage,
  RestorePointRecord,
  RunRecord,
} from "./types";

type Row<T> = { record: T; etag: string };

function copy<T extends object>(record: T, etag: string): T {
  return { ...structuredClone(record), etag } as T;
}

export class MemoryLineage implements Lineage {
  private readonly disks = new Map<string, Row<DiskRecord>>();
  private readonly runs = new Map<string, Map<string, Row<RunRecord>>>();
  private readonly points = new Map<string, Map<string, Row<RestorePointRecord>>>();
  private readonly batches = new Map<string, { counted: Set<string>; progress: BatchProgress }>();
  private etags = 0;

  /** An independent copy of every row (simulations replay a scenario from a copy of one world). */
  clone(): MemoryLineage {
    const copy = new MemoryLineage();
    for (const [k, v] of this.disks) copy.disks.set(k, structuredClone(v));
    for (const [k, v] of this.runs) copy.runs.set(k, structuredClone(v));
    for (const [k, v] of this.points) copy.points.set(k, structuredClone(v));
    for (const [k, v] of this.batches) copy.batches.set(k, structuredClone(v));
    copy.etags = this.etags;
    return copy;
  }

  private etag(): string {
    return `W/"m${++this.etags}"`;
  }

  async ensureTables(): Promise<void> {}

  private add<T extends { etag?: string }>(
    table: Map<string, Row<T>>,
    id: string,
    record: T,
    what: string,
  ): T {
    if (table.has(id)) throw new ConflictError(`${what} already exists`);
    const etag = this.etag();
    const { etag: _ignored, ...rest } = record;
    table.set(id, { record: structuredClone(rest) as T, etag });
    return copy(rest as T, etag);
  }

  private update<T extends { etag?: string }>(
    table: Map<string, Row<T>>,
    id: string,
    record: T,
    what: string,
  ): T {
    if (!record.etag)
      throw new Error(`cannot update ${what}: the record has no etag; read it from the lineage first`);
    const row = table.get(id);
    if (!row) throw new NotFoundError(`${what} does not exist`);
    if (row.etag !== record.etag)
      throw new ConflictError(
        `${what} was changed by another writer since it was read; read it again and retry`,
      );
    const etag = this.etag();
    const { etag: _ignored, ...rest } = record;
    table.set(id, { record: structuredClone(rest) as T, etag });
    return copy(rest as T, etag);
  }

  private partition<T>(tables: Map<string, Map<string, Row<T>>>, diskId: string): Map<string, Row<T>> {
    let p = tables.get(diskId);
    if (!p) tables.set(diskId, (p = new Map()));
    return p;
  }

  private list<T extends object>(p: Map<string, Row<T>> | undefined, limit?: number): T[] {
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0))
      throw new RangeError(`limit must be a whole number >= 0, got ${limit}`);
    const rows = [...(p?.entries() ?? [])].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return rows.slice(0, limit ?? rows.length).map(([, r]) => copy(r.record, r.etag));
  }

  async addDisk(disk: DiskRecord): Promise<DiskRecord> {
    return this.add(this.disks, disk.id, disk, `disk ${disk.id}`);
  }

  async getDisk(id: string): Promise<DiskRecord | undefined> {
    const row = this.disks.get(id);
    return row && copy(row.record, row.etag);
  }

  async listDisks(): Promise<DiskRecord[]> {
    return this.list(this.disks);
  }

  async updateDisk(disk: DiskRecord): Promise<DiskRecord> {
    return this.update(this.disks, disk.id, disk, `disk ${disk.id}`);
  }

  async addRun(run: RunRecord): Promise<RunRecord> {
    return this.add(
      this.partition(this.runs, run.diskId),
      newestFirstKey(run.id),
      run,
      `run ${run.id} of disk ${run.diskId}`,
    );
  }

  async getRun(diskId: string, runId: string): Promise<RunRecord | undefined> {
    const row = this.runs.get(diskId)?.get(newestFirstKey(runId));
    return row && copy(row.record, row.etag);
  }

  async updateRun(run: RunRecord): Promise<RunRecord> {
    return this.update(
      this.partition(this.runs, run.diskId),
      newestFirstKey(run.id),
      run,
      `run ${run.id} of disk ${run.diskId}`,
    );
  }

  async listRuns(diskId: string, limit?: number): Promise<RunRecord[]> {
    return this.list(this.runs.get(diskId), limit);
  }

  async addPoint(point: RestorePointRecord): Promise<RestorePointRecord> {
    return this.add(
      this.partition(this.points, point.diskId),
      newestFirstKey(point.id),
      point,
      `restore point ${point.id} of disk ${point.diskId}`,
    );
  }

  async getPoint(diskId: string, pointId: string): Promise<RestorePointRecord | undefined> {
    const row = this.points.get(diskId)?.get(newestFirstKey(pointId));
    return row && copy(row.record, row.etag);
  }

  async updatePoint(point: RestorePointRecord): Promise<RestorePointRecord> {
    return this.update(
      this.partition(this.points, point.diskId),
      newestFirstKey(point.id),
      point,
      `restore point ${point.id} of disk ${point.diskId}`,
    );
  }

  async listPoints(diskId: string, limit?: number): Promise<RestorePointRecord[]> {
    return this.list(this.points.get(diskId), limit);
  }

  async deletePoint(diskId: string, pointId: string): Promise<void> {
    this.points.get(diskId)?.delete(newestFirstKey(pointId));
  }

  async countBatch(_diskId: string, runId: string, batch: BatchId, counts: BatchCounts): Promise<boolean> {
    let entry = this.batches.get(runId);
    if (!entry)
      this.batches.set(
        runId,
        (entry = { counted: new Set(), progress: { batches: 0, bytesCopied: 0, chunksDone: 0 } }),
      );
    const marker = `${batch.generation}-${batch.batch}`;
    if (entry.counted.has(marker)) return false;
    entry.counted.add(marker);
    entry.progress = {
      batches: entry.progress.batches + 1,
      bytesCopied: entry.progress.bytesCopied + counts.bytesCopied,
      chunksDone: entry.progress.chunksDone + counts.chunksDone,
    };
    return true;
  }

  async batchProgress(_diskId: string, runId: string): Promise<BatchProgress> {
    return { ...(this.batches.get(runId)?.progress ?? { batches: 0, bytesCopied: 0, chunksDone: 0 }) };
  }
}
