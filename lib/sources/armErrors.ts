/**
 * ARM's failures in words a person can act on. An access-denied answer (403 AuthorizationFailed or
 * LinkedAuthorizationFailed) names the action ARM refused; here it becomes the least-privilege
 * built-in role that grants it, by its documented id (learn.microsoft.com, built-in roles,
 * Compute), and the scope to grant it on. A missing resource, group or subscription says which.
 * Messages never carry a SAS (ARM's error bodies hold none) and are one line.
 */
import { armErrorInfo } from "../azure/arm";

export interface BuiltInRole {
  name: string;
  id: string;
}

/** The built-in roles made for disk backup and restore, by documented id. */
export const ROLES = {
  diskBackupReader: { name: "Disk Backup Reader", id: "3e5e47e6-65f7-47ef-90b5-e5dd4d455f24" },
  diskSnapshotContributor: { name: "Disk Snapshot Contributor", id: "7efff54f-a5b4-42b5-a1c5-5411624893ce" },
  diskRestoreOperator: { name: "Disk Restore Operator", id: "b50d9833-a0cb-478e-945f-707fcc997c13" },
  reader: { name: "Reader", id: "acdd72a7-3385-48ef-bd42-f606fba81ae7" },
} satisfies Record<string, BuiltInRole>;

/** The role an action calls for; undefined where no built-in disk role has it (a custom role is needed). */
export function roleFor(action: string): BuiltInRole | undefined {
  const a = action.toLowerCase();
  if (a === "microsoft.compute/disks/read" || a === "microsoft.compute/disks/begingetaccess/action")
    return ROLES.diskBackupReader;
  if (a.startsWith("microsoft.compute/snapshots/")) return ROLES.diskSnapshotContributor;
  if (a === "microsoft.compute/disks/write" || a === "microsoft.resources/subscriptions/resourcegroups/read")
    return ROLES.diskRestoreOperator;
  if (a === "microsoft.compute/virtualmachines/read") return ROLES.reader;
  return undefined;
}

/** Actions no built-in disk role grants (only Contributor or Owner do): restore needs a custom role. */
export const CUSTOM_ROLE_ACTIONS = [
  "Microsoft.Compute/disks/read",
  "Microsoft.Compute/disks/write",
  "Microsoft.Compute/disks/delete",
  "Microsoft.Compute/disks/beginGetAccess/action",
  "Microsoft.Compute/disks/endGetAccess/action",
];

function quoted(message: string, after: RegExp): string | undefined {
  return after.exec(message)?.[1];
}

/** The group part of a scope, for "grant it on …". */
function groupOf(scope: string): string {
  const m = /^(\/subscriptions\/[^/]+\/resourceGroups\/[^/]+)/i.exec(scope);
  return m ? m[1] : scope;
}

/** A failed long-running operation is a plain Error whose message carries ARM's code: `…has failed. <code>. <message>`. */
function lroCode(message: string): string | undefined {
  return /^The long-running operation has failed\. ([\w.]+)\. /.exec(message)?.[1];
}

export interface ArmProblem {
  status?: number;
  code?: string;
  /** The sentence, naming `what`. */
  message: string;
  /** A 403: the identity lacks a role. */
  denied: boolean;
  notFound: boolean;
}

/**
 * `what`: the resource in the user's terms, e.g. "managed disk /subscriptions/…/disks/d1".
 * `expected`: the action and scope the call needs, for answers that do not say (a failed list
 * page reads only "Pagination failed with unexpected statusCode 403").
 */
export function describeArmError(
  err: unknown,
  what: string,
  expected?: { action: string; scope: string },
): ArmProblem {
  const info = armErrorInfo(err);
  const code = info.code ?? lroCode(info.message);
  const base = { status: info.status, code, denied: false, notFound: false };
  if (info.status === 403 || code === "AuthorizationFailed" || code === "LinkedAuthorizationFailed") {
    const linked = code === "LinkedAuthorizationFailed";
    const action =
      (linked
        ? quoted(info.message, /perform action\(s\) '([^']+)'/)
        : quoted(info.message, /perform action '([^']+)'/)) ?? expected?.action;
    const scope =
      (linked
        ? quoted(info.message, /linked scope\(s\) '([^']+)'/)
        : quoted(info.message, /over scope '([^']+)'/)) ?? expected?.scope;
    const role = action ? roleFor(action) : undefined;
    const grant = role
      ? `grant it the built-in role "${role.name}" (${role.id}) on ${scope ? groupOf(scope) : "the resource group"}`
      : action
        ? `no built-in disk role has ${action}: grant a custom role with ${CUSTOM_ROLE_ACTIONS.join(", ")} (or Contributor) on ${scope ? groupOf(scope) : "the resource group"}`
        : "check its role assignments (see the README's roles section)";
    return {
      ...base,
      denied: true,
      message: `access denied to ${what} (${code ?? "403"}): the identity may not ${action ?? "do this"}${scope ? ` on ${scope}` : ""}; ${grant}`,
    };
  }
  if (info.status === 404 || code === "ResourceNotFound" || code === "NotFound") {
    const detail =
      code === "ResourceGroupNotFound"
        ? `its resource group does not exist (${info.message})`
        : code === "SubscriptionNotFound"
          ? `its subscription does not exist or is not visible to the identity (${info.message})`
          : `it was not found (${code ?? "404"})`;
    return { ...base, notFound: true, message: `${what}: ${detail}` };
  }
  if (
    info.status === undefined &&
    /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|certificate|self.signed/i.test(info.message)
  )
    return {
      ...base,
      message: `cannot reach Azure Resource Manager for ${what}: ${info.message}; check DISKDELTA_ARM_ENDPOINT`,
    };
  return {
    ...base,
    message: `${what}: ${code ? `${code}${info.status ? ` (${info.status})` : ""}: ` : ""}${info.message}`,
  };
}

/**
 * A failed ARM call with a readable message. `statusCode`/`code` are set for what callers judge by
 * them (retry on 429/5xx, "gone" on 404, a refused state on 409), but not on an access-denied
 * answer: storage's wording ("give its key in STORAGE_ACCOUNT_KEYS") would replace the sentence
 * that names the missing role, so a 403 keeps only `armStatus`, `armCode` and `denied`.
 */
export class ArmError extends Error {
  readonly statusCode?: number;
  readonly code?: string;
  readonly armStatus?: number;
  readonly armCode?: string;
  readonly denied: boolean;
  readonly notFound: boolean;

  constructor(problem: ArmProblem, cause: unknown) {
    // No `cause` on a denial: rootCause() would find ARM's 403 behind it and word it as storage's.
    super(problem.message, problem.denied ? undefined : { cause });
    this.name = "ArmError";
    this.armStatus = problem.status;
    this.armCode = problem.code;
    this.denied = problem.denied;
    this.notFound = problem.notFound;
    if (!problem.denied) {
      this.statusCode = problem.status;
      this.code = problem.code;
    }
  }
}

export function armError(err: unknown, what: string): ArmError {
  return err instanceof ArmError ? err : new ArmError(describeArmError(err, what), err);
}
