/**
 * Registering every disk of a virtual machine: its OS disk and each data disk, as the VM's storage
 * profile names them (through ARM), with ids derived from the VM and the LUN: `<vm>-os`,
 * `<vm>-lun<n>` (the VM's name in disk-id form, or a prefix the user gives). Guarantees: every
 * check runs for every disk before the first one is registered (ids free and valid, each disk
 * reachable and snapshottable, no backup blob taken), so bad input registers nothing; disks of
 * the VM that are not managed-disk resources (an ephemeral OS disk, an unmanaged VHD) are
 * reported, not silently dropped; each disk is then registered by `addDisk`, with all its checks.
 */
import { InputError, type Problem } from "../core/errors";
import type { Deps } from "../deps";
import type { DiskRecord } from "../lineage/types";
import { addDisk, checkDiskId, DEFAULT_BACKUP_CONTAINER, type DiskInput } from "./register";

export interface VmInput extends Omit<DiskInput, "id" | "source" | "backupBlob"> {
  vm: string;
  /** Prefix of the disk ids; default: the VM's name in disk-id form. */
  prefix?: string;
}

export interface VmRegistration {
  vmId: string;
  disks: Array<{ id: string; role: "os" | "data"; lun?: number; record: DiskRecord }>;
  skipped: Array<{ name: string; reason: string }>;
}

/** Room left in a 63-character disk id for `-lun63`. */
const PREFIX_MAX = 57;

/** A VM name as a disk-id prefix: lowercase, other characters as hyphens, trimmed to fit. */
export function vmPrefix(vmName: string): string {
  return vmName
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-{2,}/g, "-")
    .slice(0, PREFIX_MAX)
    .replace(/^-+|-+$/g, "");
}

export function vmDiskId(prefix: string, role: "os" | "data", lun?: number): string {
  return role === "os" ? `${prefix}-os` : `${prefix}-lun${lun}`;
}

export async function addVmDisks(deps: Deps, input: VmInput): Promise<VmRegistration> {
  const managed = deps.sources.managed;
  if (!managed)
    throw InputError.field(
      "vm",
      "managed disks need Azure Resource Manager access, which is not configured here",
    );
  const vm = await managed.vmDisks(input.vm, "vm");
  const prefix = input.prefix ?? vmPrefix(vm.vmName);
  const problems: Problem[] = [];
  if (input.prefix !== undefined && input.prefix.length > PREFIX_MAX)
    problems.push({
      field: "id",
      message: `"${input.prefix}" is longer than ${PREFIX_MAX} characters, too long for <id>-lun<n>`,
    });
  if (vm.disks.length === 0)
    problems.push({
      field: "vm",
      message: `virtual machine ${vm.vmId} has no managed disks to protect${vm.skipped.length ? ` (${vm.skipped.map((s) => `${s.name}: ${s.reason}`).join("; ")})` : ""}`,
    });
  const planned = vm.disks.map((d) => ({ ...d, diskId: vmDiskId(prefix, d.role, d.lun) }));
  const existing = await deps.lineage.listDisks();
  const container = input.backupContainer ?? DEFAULT_BACKUP_CONTAINER;
  for (const d of planned) {
    const idProblem = checkDiskId(d.diskId);
    if (idProblem) {
      problems.push({
        field: input.prefix !== undefined ? "id" : "vm",
        message: `${idProblem}; give a prefix as the disk id`,
      });
      continue;
    }
    if (existing.some((e) => e.id === d.diskId))
      problems.push({
        field: "vm",
        message: `disk ${d.diskId} is already registered; give another prefix as the disk id`,
      });
    if (
      existing.some(
        (e) =>
          e.backupContainer === container && e.backupBlob === d.diskId && sameAccount(e, input.backupAccount),
      )
    )
      problems.push({
        field: "vm",
        message: `backup blob ${container}/${d.diskId} is already used by another disk; give another prefix as the disk id`,
      });
    try {
      const source = await deps.sources.inspect(d.id, "vm");
      const twin = existing.find(
        (e) => e.sourceDiskId && e.sourceDiskId.toLowerCase() === source.sourceUrl.toLowerCase(),
      );
      if (twin)
        problems.push({
          field: "vm",
          message: `${source.sourceUrl} is already protected by disk ${twin.id}`,
        });
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      problems.push(
        ...err.problems.map((p) => ({
          field: "vm",
          message: `${d.role === "os" ? "OS disk" : `data disk LUN ${d.lun}`}: ${p.message}`,
        })),
      );
    }
  }
  if (problems.length) throw new InputError(problems);

  const registered: VmRegistration["disks"] = [];
  for (const d of planned) {
    try {
      const record = await addDisk(deps, {
        id: d.diskId,
        source: d.id,
        backupAccount: input.backupAccount,
        backupContainer: input.backupContainer,
        intervalMinutes: input.intervalMinutes,
        retention: input.retention,
      });
      registered.push({ id: record.id, role: d.role, lun: d.lun, record });
    } catch (err) {
      if (registered.length === 0) throw err;
      // Checked above; something changed meanwhile. Say what is registered so nothing is left unknown.
      throw new Error(
        `registered ${registered.map((r) => r.id).join(", ")} of virtual machine ${vm.vmId}, then disk ${d.diskId} failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return { vmId: vm.vmId, disks: registered, skipped: vm.skipped };
}

function sameAccount(d: DiskRecord, accountUrl: string): boolean {
  return d.backupAccountUrl.replace(/\/+$/, "") === accountUrl.trim().replace(/\/+$/, "");
}
