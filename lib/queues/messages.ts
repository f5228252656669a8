/**
 * The queue contract between the app's triggers. Every message is JSON, base64-encoded as the
 * Functions host expects by default; `decode*` validates and names what is wrong, so a malformed
 * message fails clearly (and ends on the poison queue) instead of half-running. Delivery is
 * at-least-once everywhere: each consumer is safe to run twice on the same message.
 */
import type { RunTrigger } from "../lineage/types";

export const QUEUES = {
  /** A claimed run to start (snapshot, plan, copy inline or fan out), or to continue planning. */
  backupRequests: "diskdelta-backup-requests",
  /** Batches of chunks of a fanned-out run. */
  chunks: "diskdelta-chunks",
  /** Restores started over HTTP. */
  restoreRequests: "diskdelta-restore-requests",
} as const;

/** The Functions host moves a message that failed maxDequeueCount times to `<queue>-poison`. */
export function poisonQueue(queue: string): string {
  return `${queue}-poison`;
}

export interface BackupRequestMessage {
  diskId: string;
  runId: string;
  trigger: RunTrigger;
  /** Set when this message continues a plan that an earlier invocation checkpointed. */
  continuePlan?: boolean;
  /** Seal a restore point even if nothing changed. */
  force?: boolean;
}

export interface ChunkMessage {
  diskId: string;
  runId: string;
  /** Batch number within the run, from 0; completion is recorded per batch. */
  batch: number;
  /** The planning invocation that sent it: a batch of a planner that died past its checkpoint is not counted. */
  generation: number;
  /** Each chunk: its 4 MiB window index and half-open [start, end) ranges inside it. */
  chunks: { index: number; ranges: [number, number][] }[];
}

/** Where a restore as a managed disk puts the new disk (absent fields: the original disk's). */
export interface ManagedRestoreTarget {
  resourceGroup?: string;
  sku?: string;
  zone?: string;
  location?: string;
}

export interface RestoreRequestMessage {
  diskId: string;
  point: string;
  name?: string;
  overwrite?: boolean;
  allowDamaged?: boolean;
  /** Present for a restore as a managed disk. */
  asManagedDisk?: ManagedRestoreTarget;
  /** The restore's id (rs-…): the request, its log lines and the restored disk's first run. */
  requestId: string;
}

export class MessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MessageError";
  }
}

export function encodeMessage(body: object): string {
  return Buffer.from(JSON.stringify(body), "utf8").toString("base64");
}

/** Accepts what a queue trigger hands over: an already-parsed object, a JSON string, or base64 JSON. */
export function parseMessage(raw: unknown): Record<string, unknown> {
  if (raw && typeof raw === "object" && !Buffer.isBuffer(raw)) return raw as Record<string, unknown>;
  const text = Buffer.isBuffer(raw) ? raw.toString("utf8") : String(raw ?? "");
  const candidates = [text, Buffer.from(text, "base64").toString("utf8")];
  for (const candidate of candidates) {
    try {
      const value = JSON.parse(candidate) as unknown;
      if (value && typeof value === "object") return value as Record<string, unknown>;
    } catch {
      // try the next form
    }
  }
  throw new MessageError("the message is not JSON (nor base64 JSON)");
}

function field<T>(
  m: Record<string, unknown>,
  name: string,
  type: "string" | "number" | "boolean",
  optional = false,
): T {
  const value = m[name];
  if (value === undefined && optional) return undefined as T;
  if (typeof value !== type) throw new MessageError(`message field ${name} must be a ${type}`);
  return value as T;
}

export function decodeBackupRequest(raw: unknown): BackupRequestMessage {
  const m = parseMessage(raw);
  return {
    diskId: field(m, "diskId", "string"),
    runId: field(m, "runId", "string"),
    trigger: field(m, "trigger", "string"),
    continuePlan: field(m, "continuePlan", "boolean", true),
    force: field(m, "force", "boolean", true),
  };
}

export function decodeChunkMessage(raw: unknown): ChunkMessage {
  const m = parseMessage(raw);
  const chunks = m.chunks;
  if (!Array.isArray(chunks) || chunks.length === 0)
    throw new MessageError("message field chunks must be a non-empty array");
  for (const c of chunks as { index?: unknown; ranges?: unknown }[]) {
    if (typeof c?.index !== "number" || !Array.isArray(c.ranges))
      throw new MessageError("each chunk needs an index and ranges");
    for (const r of c.ranges as unknown[]) {
      if (
        !Array.isArray(r) ||
        r.length !== 2 ||
        typeof r[0] !== "number" ||
        typeof r[1] !== "number" ||
        r[0] % 512 ||
        r[1] % 512 ||
        r[1] <= r[0]
      ) {
        throw new MessageError(`chunk ${c.index} has a range that is not [start, end) on 512-byte pages`);
      }
    }
  }
  return {
    diskId: field(m, "diskId", "string"),
    runId: field(m, "runId", "string"),
    batch: field(m, "batch", "number"),
    generation: field(m, "generation", "number"),
    chunks: chunks as ChunkMessage["chunks"],
  };
}

function decodeManagedTarget(value: unknown): ManagedRestoreTarget | undefined {
  if (value === undefined) return undefined;
  if (!value || typeof value !== "object" || Array.isArray(value))
    throw new MessageError("message field asManagedDisk must be an object");
  const m = value as Record<string, unknown>;
  return {
    resourceGroup: field(m, "resourceGroup", "string", true),
    sku: field(m, "sku", "string", true),
    zone: field(m, "zone", "string", true),
    location: field(m, "location", "string", true),
  };
}

export function decodeRestoreRequest(raw: unknown): RestoreRequestMessage {
  const m = parseMessage(raw);
  return {
    asManagedDisk: decodeManagedTarget(m.asManagedDisk),
    diskId: field(m, "diskId", "string"),
    point: field(m, "point", "string"),
    name: field(m, "name", "string", true),
    overwrite: field(m, "overwrite", "boolean", true),
    allowDamaged: field(m, "allowDamaged", "boolean", true),
    requestId: field(m, "requestId", "string"),
  };
}
