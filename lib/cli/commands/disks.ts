/** `disk add`, `disk list`, `disk set`. */
import { addDisk, setDisk, type RetentionInput } from "../../disks/register";
import { describePolicy, policyOf } from "../../retention/policy";
import { diskJson } from "../../app/views";
import { InputError } from "../../core/errors";
import type { DiskRecord } from "../../lineage/types";
import { shortUrl, table } from "../format";
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
  if (o.vm !== undefined)
    throw new InputError([
      {
        field: "vm",
        message: "registering a VM's disks needs managed-disk support, which this build does not have yet",
      },
    ]);
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
  o: KeepOptions & { intervalMinutes?: string },
): Promise<void> {
  const updated = await withEngine(opts, (e) =>
    setDisk(e, id, { retention: retention(o), intervalMinutes: o.intervalMinutes }),
  );
  print(
    opts,
    diskJson(updated),
    `disk ${updated.id} keeps: ${describePolicy(policyOf(updated))}; interval: ${interval(updated)}`,
  );
}
