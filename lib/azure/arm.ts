/**
 * Azure Resource Manager for managed disks: the one place that builds a ComputeManagementClient
 * (@azure/arm-compute 25), with the app's identity (lib/azure/credentials.ts), one client per
 * subscription (a resource id names its own). Guarantees: tokens are asked for the configured
 * endpoint's own scope and only over HTTPS (the SDK refuses a bearer token on plain HTTP); the
 * endpoint and a test CA come from the composition root, so tests point it at a local fake; a
 * long-running operation is polled every `pollMs` unless ARM's Retry-After says otherwise.
 * Resource ids are parsed here, strictly, and compared case-insensitively (ARM ids are; VM
 * profiles are known to spell the resource group in capitals).
 */
import type { ComputeManagementClient } from "@azure/arm-compute";
import type { TokenCredential } from "@azure/identity";
import { InputError } from "../core/errors";

export interface ArmSettings {
  /** https origin of ARM, e.g. https://management.azure.com. */
  endpoint: string;
  /** Poll interval of long-running operations without Retry-After. */
  pollMs: number;
  /** Tries per ARM request on 429, 5xx and network errors (the SDK's own retry policy). */
  retryAttempts: number;
  retryBaseMs: number;
  /** A PEM to trust instead of the system's roots (tests: the fake's generated certificate). */
  ca?: string;
}

export class ArmClients {
  private readonly clients = new Map<string, ComputeManagementClient>();

  constructor(
    private readonly credential: () => TokenCredential,
    readonly settings: ArmSettings,
  ) {}

  /** Options every long-running call takes. */
  get poll(): { updateIntervalInMs: number } {
    return { updateIntervalInMs: this.settings.pollMs };
  }

  compute(subscriptionId: string): ComputeManagementClient {
    const key = subscriptionId.toLowerCase();
    let client = this.clients.get(key);
    if (!client) {
      // Loaded when a managed disk is first reached (about 24 MiB): page-blob-only processes never do.
      const { ComputeManagementClient } =
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        require("@azure/arm-compute") as typeof import("@azure/arm-compute");
      client = new ComputeManagementClient(this.credential(), subscriptionId, {
        endpoint: this.settings.endpoint,
        credentials: { scopes: [`${this.settings.endpoint}/.default`] },
        retryOptions: {
          maxRetries: Math.max(0, this.settings.retryAttempts - 1),
          retryDelayInMs: this.settings.retryBaseMs,
          maxRetryDelayInMs: 30_000,
        },
        ...(this.settings.ca ? { tlsOptions: { ca: this.settings.ca } } : {}),
      });
      this.clients.set(key, client);
    }
    return client;
  }
}

/** The resource types diskdelta names, as their ids spell them. */
export type ComputeType = "disks" | "snapshots" | "virtualMachines";

export interface ResourceId {
  subscription: string;
  resourceGroup: string;
  type: ComputeType;
  name: string;
  /** The canonical spelling: `/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Compute/<type>/<name>`. */
  id: string;
}

const ID = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/([^/]+)\/([^/]+)\/([^/]+)$/i;
const SUBSCRIPTION = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const GROUP = /^[-\w.()]{0,89}[-\w()]$/;
/** Disk, snapshot and VM names (Compute's rules: 1-80 of letters, digits, `_ . -`, starting with a letter, digit or `_`). */
export const COMPUTE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$/;

const TYPES: Record<string, ComputeType> = {
  disks: "disks",
  snapshots: "snapshots",
  virtualmachines: "virtualMachines",
};

const EXAMPLE: Record<ComputeType, string> = {
  disks: "/subscriptions/<subscription id>/resourceGroups/<group>/providers/Microsoft.Compute/disks/<name>",
  snapshots:
    "/subscriptions/<subscription id>/resourceGroups/<group>/providers/Microsoft.Compute/snapshots/<name>",
  virtualMachines:
    "/subscriptions/<subscription id>/resourceGroups/<group>/providers/Microsoft.Compute/virtualMachines/<name>",
};

function article(type: ComputeType): string {
  return type === "disks" ? "a managed disk" : type === "snapshots" ? "a snapshot" : "a virtual machine";
}

/** Parses any Microsoft.Compute resource id of the three types; undefined for anything else. */
export function tryParseResourceId(raw: string): ResourceId | undefined {
  const m = ID.exec(raw.trim());
  if (!m) return undefined;
  const [, subscription, resourceGroup, provider, rawType, name] = m;
  const type = TYPES[rawType.toLowerCase()];
  if (provider.toLowerCase() !== "microsoft.compute" || !type) return undefined;
  if (!SUBSCRIPTION.test(subscription) || !GROUP.test(resourceGroup) || !COMPUTE_NAME.test(name))
    return undefined;
  return {
    subscription,
    resourceGroup,
    type,
    name,
    id: resourceIdOf(subscription, resourceGroup, type, name),
  };
}

export function resourceIdOf(subscription: string, resourceGroup: string, type: ComputeType, name: string) {
  return `/subscriptions/${subscription}/resourceGroups/${resourceGroup}/providers/Microsoft.Compute/${type}/${name}`;
}

/**
 * A resource id of `expected` type given on `field`; every other shape is an InputError that says
 * what it is instead (a VM where a disk is expected names the option that takes a VM).
 */
export function parseResourceId(
  raw: string,
  expected: ComputeType,
  field: string,
  hint?: Partial<Record<ComputeType, string>>,
): ResourceId {
  const parsed = tryParseResourceId(raw);
  if (parsed && parsed.type === expected) return parsed;
  if (parsed)
    throw InputError.field(
      field,
      `${raw} is ${article(parsed.type)}, not ${article(expected)}${hint?.[parsed.type] ? `: ${hint[parsed.type]}` : ""}`,
    );
  const m = ID.exec(raw.trim());
  const why = !m
    ? "it is not of the form"
    : !SUBSCRIPTION.test(m[1])
      ? `its subscription "${m[1]}" is not a subscription id (a GUID); the form is`
      : !GROUP.test(m[2])
        ? `its resource group "${m[2]}" is not a valid name; the form is`
        : m[3].toLowerCase() !== "microsoft.compute" || !TYPES[m[4].toLowerCase()]
          ? `it is a ${m[3]}/${m[4]} resource; the form is`
          : `its name "${m[5]}" is not a valid ${m[4]} name (1-80 letters, digits, _ . -); the form is`;
  throw InputError.field(
    field,
    `"${raw}" is not ${article(expected)} resource id: ${why} ${EXAMPLE[expected]}`,
  );
}

export function sameResource(a: string | undefined, b: string | undefined): boolean {
  return a !== undefined && b !== undefined && a.toLowerCase() === b.toLowerCase();
}

/** What ARM said when a call failed: status, code and message (RestError's fields). */
export function armErrorInfo(err: unknown): { status?: number; code?: string; message: string } {
  const e = err as { statusCode?: unknown; code?: unknown; message?: unknown };
  return {
    status: typeof e?.statusCode === "number" ? e.statusCode : undefined,
    code: typeof e?.code === "string" ? e.code : undefined,
    message: String(typeof e?.message === "string" ? e.message : err).split("\n")[0],
  };
}
