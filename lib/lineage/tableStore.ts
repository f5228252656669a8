/**
 * The lineage in Azure Table Storage (@azure/data-tables 13). Guarantees: disks live in one
 * partition ("disk") keyed by disk id; runs and restore points are partitioned by disk id and
 * keyed by `newestFirstKey(id)`, so a read by id is a point read and a partition scan is newest
 * first; every record field is its own flat column (the portal shows the runs table as the run
 * history), optional fields left out when undefined, and every number stored as Edm.Double so
 * byte counts beyond Int32 survive on real Azure and read back as the same JS number; updates
 * replace the row only if its ETag still matches the one the record was read with
 * (ConflictError otherwise, NotFoundError if the row is gone) and never run unconditionally;
 * adds never overwrite (ConflictError). Records hold no credential and no error message built
 * here names one: messages carry only table-level names and ids.
 */
import {
  AzureNamedKeyCredential,
  odata,
  TableClient,
  type TableEntity,
  type TableEntityResult,
} from "@azure/data-tables";
import type { AzureCredentials } from "../azure/credentials";
import type { StorageConnection } from "../config/settings";
import { ConflictError, NotFoundError } from "../core/errors";
import { errorInfo } from "../core/retry";
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

export const DEFAULT_TABLE_NAMES = {
  disks: "diskdeltaDisks",
  runs: "diskdeltaRuns",
  points: "diskdeltaPoints",
  progress: "diskdeltaProgress",
} as const;

/** The table names of a prefix: `<prefix>Disks`, `<prefix>Runs`, `<prefix>Points`, `<prefix>Progress`. */
export function tableNames(prefix: string) {
  return {
    disks: `${prefix}Disks`,
    runs: `${prefix}Runs`,
    points: `${prefix}Points`,
    progress: `${prefix}Progress`,
  };
}

/** Table-service errors whose XML or JSON body would otherwise be printed as it is: one line that says what to fix. */
export function describeTableError(err: unknown, what: string): Error {
  const { status, code, message } = errorInfo(err);
  if (status === 403 || code === "AuthenticationFailed" || code === "AuthorizationFailure") {
    return Object.assign(
      new Error(
        `the lineage storage refused access while ${what} (${code ?? status}): check the key in AzureWebJobsStorage, or give the identity the role "Storage Table Data Contributor" on that account`,
      ),
      { statusCode: status, code },
    );
  }
  const line = message
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .replace(/\s*RequestId:.*$/, "")
    .trim();
  return Object.assign(new Error(`lineage storage, ${what}: ${line.slice(0, 300)}`), {
    statusCode: status,
    code,
    cause: err,
  });
}

const DISK_PARTITION = "disk";

/** The service's page limit; asking for more per page is refused. */
const MAX_PAGE_SIZE = 1000;

type ColumnKind<R, K extends keyof R> = NonNullable<R[K]> extends number ? "number" : "string";
/**
 * One entry per record field except `etag`, saying how it is stored and whether it may be absent.
 * Listing every key is enforced by the type, so a field added to a record cannot be silently dropped.
 */
type Columns<R> = {
  readonly [K in Exclude<keyof R, "etag">]-?: undefined extends R[K]
    ? `${ColumnKind<R, K>}?`
    : ColumnKind<R, K>;
};

const DISK_COLUMNS: Columns<DiskRecord> = {
  id: "string",
  sourceUrl: "string",
  sourceDiskId: "string?",
  backupAccountUrl: "string",
  backupContainer: "string",
  backupBlob: "string",
  createdAt: "string",
  baseSnapshot: "string?",
  baseSize: "number?",
  basePoint: "string?",
  baseFence: "number?",
  activeRunId: "string?",
  lastRunId: "string?",
  lastSuccessAt: "string?",
  intervalMinutes: "number?",
  retainLast: "number?",
  retainDaily: "number?",
  retainWeekly: "number?",
  retainMonthly: "number?",
};

const RUN_COLUMNS: Columns<RunRecord> = {
  id: "string",
  diskId: "string",
  trigger: "string",
  kind: "string",
  detection: "string?",
  state: "string",
  startedAt: "string",
  updatedAt: "string",
  finishedAt: "string?",
  owner: "string",
  leaseUntil: "string",
  sourceSnapshot: "string?",
  sourceCapturedAt: "string?",
  baseSnapshot: "string?",
  sourceSize: "number?",
  rangesWritten: "number",
  rangesCleared: "number",
  chunksTotal: "number",
  chunksDone: "number",
  bytesPlanned: "number",
  bytesCopied: "number",
  bytesCleared: "number",
  checkpoint: "number?",
  mode: "string?",
  batchesTotal: "number?",
  planComplete: "string?",
  planGeneration: "number?",
  generationStart: "number?",
  fence: "number?",
  backupSnapshot: "string?",
  restorePoint: "string?",
  reason: "string?",
  error: "string?",
};

const POINT_COLUMNS: Columns<RestorePointRecord> = {
  id: "string",
  diskId: "string",
  runId: "string",
  kind: "string",
  backupSnapshot: "string",
  backupUrl: "string",
  sourceSnapshot: "string",
  size: "number",
  createdAt: "string",
  capturedAt: "string?",
  verifiedAt: "string?",
  verifyResult: "string?",
  digestsUrl: "string?",
  integrity: "string?",
  readingUntil: "string?",
  deletingSince: "string?",
};

type Entity = TableEntity<Record<string, unknown>>;

function toEntity<R extends object>(
  columns: Columns<R>,
  record: R,
  partitionKey: string,
  rowKey: string,
  what: string,
): Entity {
  const fields = record as Record<string, unknown>;
  const entity: Entity = { partitionKey, rowKey };
  for (const [name, column] of Object.entries(columns) as [string, string][]) {
    const value = fields[name];
    if (value === undefined) {
      if (!column.endsWith("?")) throw new Error(`${what}: ${name} is required`);
      continue;
    }
    if (column.startsWith("number")) {
      // NaN and ±Infinity would reach the service as JSON null.
      if (typeof value !== "number" || !Number.isFinite(value))
        throw new Error(`${what}: ${name} must be a finite number`);
      // Untyped JSON integers are taken as Edm.Int32, which cannot hold a byte count above 2 GiB.
      entity[name] = { value, type: "Double" };
    } else {
      if (typeof value !== "string") throw new Error(`${what}: ${name} must be a string`);
      entity[name] = value;
    }
  }
  return entity;
}

function fromEntity<R extends object>(
  columns: Columns<R>,
  entity: TableEntityResult<Record<string, unknown>>,
  what: string,
): R {
  const record: Record<string, unknown> = {};
  for (const [name, column] of Object.entries(columns) as [string, string][]) {
    const raw = entity[name];
    if (raw === undefined || raw === null) {
      if (!column.endsWith("?")) throw new Error(`${what} has no ${name} column`);
      continue;
    }
    if (column.startsWith("number")) {
      record[name] = readNumber(raw, `${what} column ${name}`);
    } else {
      if (typeof raw !== "string") throw new Error(`${what} column ${name} is not a string`);
      record[name] = raw;
    }
  }
  if (entity.etag) record.etag = entity.etag;
  return record as R;
}

/**
 * Our rows hold JS numbers, but a row edited by hand may come back as an Int64 (a bigint from the
 * SDK) or a Double annotated as a string; all three mean the same number.
 */
function readNumber(raw: unknown, what: string): number {
  let value = raw;
  if (typeof raw === "bigint") {
    value = Number(raw);
    if (!Number.isSafeInteger(value)) throw new Error(`${what} is beyond 2^53`);
  } else if (typeof raw === "string" && raw.trim() !== "") {
    value = Number(raw);
  }
  if (typeof value !== "number" || !Number.isFinite(value)) throw new Error(`${what} is not a number`);
  return value;
}

function statusOf(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const status = (err as { statusCode?: unknown }).statusCode;
  return typeof status === "number" ? status : undefined;
}

/** PartitionKey and RowKey refuse these characters; say so before the service answers a bare 400. */
function checkKey(value: string, what: string): void {
  // eslint-disable-next-line no-control-regex
  if (value === "" || /[/\\#?\u0000-\u001f\u007f-\u009f]/.test(value))
    throw new Error(
      `${what} '${value}' cannot be a table key: it must be non-empty without / \\ # ? or control characters`,
    );
}

export class TableLineage implements Lineage {
  private readonly disks: TableClient;
  private readonly runs: TableClient;
  private readonly points: TableClient;
  private readonly progress: TableClient;

  constructor(
    tableFor: (tableName: string) => TableClient,
    names: { disks?: string; runs?: string; points?: string; progress?: string } = {},
  ) {
    this.disks = tableFor(names.disks ?? DEFAULT_TABLE_NAMES.disks);
    this.runs = tableFor(names.runs ?? DEFAULT_TABLE_NAMES.runs);
    this.points = tableFor(names.points ?? DEFAULT_TABLE_NAMES.points);
    this.progress = tableFor(names.progress ?? DEFAULT_TABLE_NAMES.progress);
  }

  async ensureTables(): Promise<void> {
    // createTable already swallows 409 TableAlreadyExists; any other 409 (TableBeingDeleted
    // shortly after a delete) must surface, so no blanket catch here.
    try {
      await Promise.all([
        this.disks.createTable(),
        this.runs.createTable(),
        this.points.createTable(),
        this.progress.createTable(),
      ]);
    } catch (err) {
      throw describeTableError(err, "opening its tables");
    }
  }

  async countBatch(_diskId: string, runId: string, batch: BatchId, counts: BatchCounts): Promise<boolean> {
    const marker = { partitionKey: runId, rowKey: `b-${batch.generation}-${batch.batch}` };
    // A counter row per run plus one marker row per counted batch, written in one transaction:
    // a redelivered batch finds its marker and is not counted twice; a crash leaves both or neither.
    for (let pass = 0; pass < 50; pass++) {
      const counter = await this.readCounter(runId);
      const next = {
        partitionKey: runId,
        rowKey: "counter",
        done: { value: String(counter.batches + 1), type: "Double" as const },
        bytesCopied: { value: String(counter.bytesCopied + counts.bytesCopied), type: "Double" as const },
        chunksDone: { value: String(counter.chunksDone + counts.chunksDone), type: "Double" as const },
      };
      try {
        await this.progress.submitTransaction([
          ["create", marker],
          counter.etag ? ["update", next, "Replace", { etag: counter.etag }] : ["create", next],
        ]);
        return true;
      } catch (err) {
        const { status, code } = errorInfo(err);
        const markerExists =
          status === 409 &&
          code === "EntityAlreadyExists" &&
          (await this.read(this.progress, runId, marker.rowKey)) !== undefined;
        if (markerExists) return false;
        // 412 (another batch moved the counter) or 409 on a counter created meanwhile: read again.
        if (status === 412 || status === 409) {
          await new Promise((r) => setTimeout(r, Math.random() * 20 * Math.min(pass + 1, 10)));
          continue;
        }
        throw err;
      }
    }
    throw Object.assign(
      new Error(`could not record batch ${batch.batch} of run ${runId}: too much contention`),
      { statusCode: 503 },
    );
  }

  async batchProgress(_diskId: string, runId: string): Promise<BatchProgress> {
    const { etag: _etag, ...progress } = await this.readCounter(runId);
    return progress;
  }

  private async readCounter(runId: string): Promise<BatchProgress & { etag?: string }> {
    const e = await this.read(this.progress, runId, "counter");
    if (!e) return { batches: 0, bytesCopied: 0, chunksDone: 0 };
    return {
      batches: readNumber(e.done, "progress counter done"),
      bytesCopied: readNumber(e.bytesCopied, "progress counter bytesCopied"),
      chunksDone: readNumber(e.chunksDone, "progress counter chunksDone"),
      etag: e.etag,
    };
  }

  async addDisk(disk: DiskRecord): Promise<DiskRecord> {
    checkKey(disk.id, "disk id");
    const what = `disk ${disk.id}`;
    const etag = await this.create(
      this.disks,
      toEntity(DISK_COLUMNS, disk, DISK_PARTITION, disk.id, what),
      what,
    );
    return { ...disk, etag };
  }

  async getDisk(id: string): Promise<DiskRecord | undefined> {
    const entity = await this.read(this.disks, DISK_PARTITION, id);
    return entity && fromEntity(DISK_COLUMNS, entity, `disk ${id}`);
  }

  async listDisks(): Promise<DiskRecord[]> {
    return this.list(this.disks, DISK_PARTITION, undefined, (e) =>
      fromEntity(DISK_COLUMNS, e, `disk ${e.rowKey}`),
    );
  }

  async updateDisk(disk: DiskRecord): Promise<DiskRecord> {
    const what = `disk ${disk.id}`;
    const entity = toEntity(DISK_COLUMNS, disk, DISK_PARTITION, disk.id, what);
    return { ...disk, etag: await this.replace(this.disks, entity, disk.etag, what) };
  }

  async addRun(run: RunRecord): Promise<RunRecord> {
    checkKey(run.diskId, "disk id");
    const what = `run ${run.id} of disk ${run.diskId}`;
    const entity = toEntity(RUN_COLUMNS, run, run.diskId, newestFirstKey(run.id), what);
    return { ...run, etag: await this.create(this.runs, entity, what) };
  }

  async getRun(diskId: string, runId: string): Promise<RunRecord | undefined> {
    const entity = await this.read(this.runs, diskId, newestFirstKey(runId));
    return entity && fromEntity(RUN_COLUMNS, entity, `run ${runId} of disk ${diskId}`);
  }

  async updateRun(run: RunRecord): Promise<RunRecord> {
    const what = `run ${run.id} of disk ${run.diskId}`;
    const entity = toEntity(RUN_COLUMNS, run, run.diskId, newestFirstKey(run.id), what);
    return { ...run, etag: await this.replace(this.runs, entity, run.etag, what) };
  }

  async listRuns(diskId: string, limit?: number): Promise<RunRecord[]> {
    return this.list(this.runs, diskId, limit, (e) =>
      fromEntity(RUN_COLUMNS, e, `run row ${e.rowKey} of disk ${diskId}`),
    );
  }

  async addPoint(point: RestorePointRecord): Promise<RestorePointRecord> {
    checkKey(point.diskId, "disk id");
    const what = `restore point ${point.id} of disk ${point.diskId}`;
    const entity = toEntity(POINT_COLUMNS, point, point.diskId, newestFirstKey(point.id), what);
    return { ...point, etag: await this.create(this.points, entity, what) };
  }

  async getPoint(diskId: string, pointId: string): Promise<RestorePointRecord | undefined> {
    const entity = await this.read(this.points, diskId, newestFirstKey(pointId));
    return entity && fromEntity(POINT_COLUMNS, entity, `restore point ${pointId} of disk ${diskId}`);
  }

  async updatePoint(point: RestorePointRecord): Promise<RestorePointRecord> {
    const what = `restore point ${point.id} of disk ${point.diskId}`;
    const entity = toEntity(POINT_COLUMNS, point, point.diskId, newestFirstKey(point.id), what);
    return { ...point, etag: await this.replace(this.points, entity, point.etag, what) };
  }

  async listPoints(diskId: string, limit?: number): Promise<RestorePointRecord[]> {
    return this.list(this.points, diskId, limit, (e) =>
      fromEntity(POINT_COLUMNS, e, `restore point row ${e.rowKey} of disk ${diskId}`),
    );
  }

  async deletePoint(diskId: string, pointId: string): Promise<void> {
    try {
      await this.points.deleteEntity(diskId, newestFirstKey(pointId));
    } catch (err) {
      // Already gone is the outcome the caller wanted; retention may delete twice.
      if (statusOf(err) !== 404) throw err;
    }
  }

  private async create(table: TableClient, entity: Entity, what: string): Promise<string> {
    try {
      return etagOf(await table.createEntity(entity), what);
    } catch (err) {
      if (statusOf(err) === 409) throw new ConflictError(`${what} already exists`);
      throw err;
    }
  }

  private async replace(
    table: TableClient,
    entity: Entity,
    etag: string | undefined,
    what: string,
  ): Promise<string> {
    // Without an ETag the SDK sends If-Match: * and the write would silently clobber a concurrent one.
    if (!etag)
      throw new Error(`cannot update ${what}: the record has no etag; read it from the lineage first`);
    try {
      return etagOf(await table.updateEntity(entity, "Replace", { etag }), what);
    } catch (err) {
      const status = statusOf(err);
      if (status === 412)
        throw new ConflictError(
          `${what} was changed by another writer since it was read; read it again and retry`,
        );
      if (status === 404) throw new NotFoundError(`${what} does not exist`);
      throw err;
    }
  }

  private async read(
    table: TableClient,
    partitionKey: string,
    rowKey: string,
  ): Promise<TableEntityResult<Record<string, unknown>> | undefined> {
    try {
      return await table.getEntity(partitionKey, rowKey);
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  private async list<R>(
    table: TableClient,
    partitionKey: string,
    limit: number | undefined,
    map: (entity: TableEntityResult<Record<string, unknown>>) => R,
  ): Promise<R[]> {
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0))
      throw new RangeError(`limit must be a whole number >= 0, got ${limit}`);
    const out: R[] = [];
    if (limit === 0) return out;
    const pages = table
      .listEntities({ queryOptions: { filter: odata`PartitionKey eq ${partitionKey}` } })
      .byPage({ maxPageSize: Math.min(limit ?? MAX_PAGE_SIZE, MAX_PAGE_SIZE) });
    for await (const page of pages) {
      for (const entity of page) {
        out.push(map(entity));
        if (out.length === limit) return out;
      }
    }
    return out;
  }
}

function etagOf(response: { etag?: string }, what: string): string {
  // The service always answers a write with an ETag; without one the next guarded update could not be made.
  if (!response.etag) throw new Error(`the table service returned no etag for ${what}`);
  return response.etag;
}

/** The lineage tables of the storage AzureWebJobsStorage names (connection string, or identity with shared key or token). */
export function openTableLineage(
  storage: StorageConnection,
  credentials: AzureCredentials,
  prefix: string,
): TableLineage {
  // The request deadline and the one retry policy (lib/azure/deadline.ts): a stalled table never hangs a command.
  const options = credentials.tableClientOptions();
  const tableFor = (name: string): TableClient => {
    if (storage.kind === "connectionString")
      return TableClient.fromConnectionString(storage.connectionString, name, options);
    const account = /^https?:\/\/([^./]+)/.exec(storage.tableServiceUri)?.[1] ?? "";
    const key = credentials.key(account);
    return key
      ? new TableClient(storage.tableServiceUri, name, new AzureNamedKeyCredential(account, key), options)
      : new TableClient(storage.tableServiceUri, name, credentials.identity(), options);
  };
  return new TableLineage(tableFor, tableNames(prefix));
}
