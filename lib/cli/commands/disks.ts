/** `disk add` (a page blob, a managed disk, or every disk of a VM), `disk list`, `disk set` (including a move to a managed disk). */
import { moveToManagedDisk } from "../../disks/migrate";
import { addDisk, setDisk, type RetentionInput } from "../../disks/register";
import { addVmDisks } from "../../disks/vm";
import { describePolicy, policyOf } from "../../retention/policy";
import { diskJson } from "../../app/views";
import { InputError } from "../../core/errors";
import type { DiskRecord } from "../../lineage/types";
import { plural, shortUrl, table } from "../format";
import { print, type GlobalOptions } from "../output";
import { withEngine } from "./engine";

interface KeepOptions {
  keepLast?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
}

function retention(o: KeepOptions): RetentionInput | undefined {
  const r: RetentionInput = {
    keepLast: o.keepLast,
    keepDaily: o.keepDaily,
    keepWeekly: o.keepWeekly,
    keepMonthly: o.keepMonthly,
  };
  return Object.values(r).some((v) => v !== undefined) ? r : undefined;
}

function interval(d: DiskRecord): string {
  return d.intervalMinutes ? `${d.intervalMinutes} min` : "schedule";
}

export async function addCommand(
  opts: GlobalOptions,
  id: string | undefined,
  o: KeepOptions & {
    source?: string;
    vm?: string;
    backupAccount: string;
    backupContainer: string;
    backupBlob?: string;
    intervalMinutes?: string;
  },
): Promise<void> {
  if (o.vm !== undefined) {
    if (o.source !== undefined)
      throw new InputError([
        { message: "{{source}} and {{vm}} cannot be combined: one disk, or every disk of a VM" },
      ]);
    if (o.backupBlob !== undefined)
      throw new InputError([
        {
          field: "backupBlob",
          message: "cannot be given with {{vm}}: each disk's backup blob is named after its id",
        },
      ]);
    return addVmCommand(opts, id, o.vm, o);
  }
  if (id === undefined)
    throw new InputError([{ field: "id", message: "is missing: diskdelta disk add <id> --source …" }]);
  if (o.source === undefined)
    throw new InputError([
      { field: "source", message: "is required (or {{vm}} to register every disk of a VM)" },
    ]);
  const added = await withEngine(opts, (e) =>
    addDisk(e, {
      id,
      source: o.source!,
      backupAccount: o.backupAccount,
      backupContainer: o.backupContainer,
      backupBlob: o.backupBlob,
      intervalMinutes: o.intervalMinutes,
      retention: retention(o),
    }),
  );
  print(
    opts,
    diskJson(added),
    `registered disk ${added.id}: ${added.sourceDiskId ?? added.sourceUrl} → ${added.backupAccountUrl}/${added.backupContainer}/${added.backupBlob}`,
  );
}

async function addVmCommand(
  opts: GlobalOptions,
  prefix: string | undefined,
  vm: string,
  o: KeepOptions & { backupAccount: string; backupContainer: string; intervalMinutes?: string },
): Promise<void> {
  const r = await withEngine(opts, (e) =>
    addVmDisks(e, {
      vm,
      prefix,
      backupAccount: o.backupAccount,
      backupContainer: o.backupContainer,
      intervalMinutes: o.intervalMinutes,
      retention: retention(o),
    }),
  );
  print(
    opts,
    {
      vm: r.vmId,
      disks: r.disks.map((d) => ({ ...diskJson(d.record), role: d.role, lun: d.lun })),
      skipped: r.skipped,
    },
    [
      `registered ${plural(r.disks.length, "disk")} of virtual machine ${r.vmId}:`,
      table(
        [
          ["ID", "DISK", "BACKUP"],
          ...r.disks.map((d) => [
            d.id,
            `${d.role === "os" ? "OS" : `LUN ${d.lun}`}: ${d.record.sourceDiskId?.split("/").slice(-1)[0] ?? ""}`,
            shortUrl(`${d.record.backupAccountUrl}/${d.record.backupContainer}/${d.record.backupBlob}`),
          ]),
        ],
        100,
        [2],
      ),
      ...r.skipped.map((s) => `not registered: ${s.name}, ${s.reason}`),
      `back them up with: ${r.disks.map((d) => `diskdelta backup ${d.id}`).join("; ")}`,
    ].join("\n"),
  );
}

/** The four counts in the order of the --keep-* options, under the header KEEP L/D/W/M. */
function keeps(d: DiskRecord): string {
  const p = policyOf(d);
  return `${p.last}/${p.daily}/${p.weekly}/${p.monthly}`;
}

export async function listCommand(opts: GlobalOptions): Promise<void> {
  const disks = await withEngine(opts, (e) => e.lineage.listDisks());
  // Sources and backups are shortened at the start, so the blob name shows; --json has them whole.
  print(
    opts,
    disks.map(diskJson),
    disks.length === 0
      ? "no disks registered; add one with 'diskdelta disk add'"
      : table(
          [
            ["ID", "SOURCE", "BACKUP", "LAST SUCCESS", "INTERVAL", "KEEP L/D/W/M"],
            ...disks.map((d) => [
              d.id,
              d.sourceDiskId ? d.sourceDiskId.split("/").slice(-1)[0] : shortUrl(d.sourceUrl),
              shortUrl(`${d.backupAccountUrl}/${d.backupContainer}/${d.backupBlob}`),
              d.lastSuccessAt?.replace(/\.\d+Z$/, "Z") ?? "never",
              interval(d),
              keeps(d),
            ]),
          ],
          100,
          [1, 2],
          { 1: "start", 2: "start" },
          [0],
        ),
  );
}

export async function setCommand(
  opts: GlobalOptions,
  id: string,
  o: KeepOptions & { intervalMinutes?: string; source?: string },
): Promise<void> {
  const changes = { retention: retention(o), intervalMinutes: o.intervalMinutes };
  const r = await withEngine(opts, async (e) => {
    const moved = o.source !== undefined ? await moveToManagedDisk(e, id, o.source) : undefined;
    const changed =
      changes.retention !== undefined || changes.intervalMinutes !== undefined || !moved
        ? await setDisk(e, id, changes)
        : moved.disk;
    return { moved, disk: changed };
  });
  const updated = r.disk;
  print(
    opts,
    { ...diskJson(updated), ...(r.moved ? { movedFrom: r.moved.from } : {}) },
    [
      ...(r.moved
        ? [
            `disk ${updated.id} now backs up managed disk ${updated.sourceDiskId} (it was page blob ${r.moved.from});`,
            `its next backup is a resync by compare against ${shortUrl(`${updated.backupAccountUrl}/${updated.backupContainer}/${updated.backupBlob}`)}, writing only what differs`,
          ]
        : []),
      `disk ${updated.id} keeps: ${describePolicy(policyOf(updated))}; interval: ${interval(updated)}`,
    ].join("\n"),
  );
}
