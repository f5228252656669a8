/** `restore` (as a new disk, or to a file), `verify`, `prune`. */
import { InputError } from "../../core/errors";
import { pointTimeIso } from "../../lineage/types";
import { applyRetention, type PlannedPoint } from "../../retention/apply";
import { describePolicy } from "../../retention/policy";
import { restoreAsManagedDisk } from "../../restore/managedDisk";
import { restoreAsNewDisk } from "../../restore/restore";
import { restoreToFile } from "../../restore/toFile";
import { verifyPoint, VerifyFailedError } from "../../restore/verify";
import { formatBytes, rows, table } from "../format";
import { print, type GlobalOptions } from "../output";
import { withEngine } from "./engine";

interface RestoreOptions {
  point: string;
  name?: string;
  overwrite?: boolean;
  toFile?: string;
  allowDamaged?: boolean;
  asManagedDisk?: boolean;
  resourceGroup?: string;
  sku?: string;
  zone?: string;
  location?: string;
}

const MANAGED_ONLY = ["resourceGroup", "sku", "zone", "location"] as const;

export async function restoreCommand(opts: GlobalOptions, id: string, o: RestoreOptions): Promise<void> {
  const managedOnly = MANAGED_ONLY.filter((k) => o[k] !== undefined);
  if (o.asManagedDisk) {
    if (o.toFile !== undefined)
      throw new InputError([{ message: "{{asManagedDisk}} and {{toFile}} cannot be combined" }]);
    return restoreManaged(opts, id, o);
  }
  if (managedOnly.length)
    throw new InputError(
      managedOnly.map((k) => ({ field: k, message: "applies only to a restore {{asManagedDisk}}" })),
    );
  if (o.toFile !== undefined) {
    if (o.name !== undefined)
      throw new InputError([{ message: "{{name}} and {{toFile}} cannot be combined" }]);
    return restoreFile(opts, id, o);
  }
  const r = await withEngine(opts, (e, bar) =>
    restoreAsNewDisk(e, id, {
      point: o.point,
      name: o.name,
      overwrite: Boolean(o.overwrite),
      allowDamaged: o.allowDamaged,
      onProgress: (position, size, bytes) =>
        bar.update({ phase: "restoring", position, size, bytesDone: bytes }),
    }),
  );
  print(
    opts,
    {
      restoreId: r.restoreId,
      diskId: r.diskId,
      diskUrl: r.diskUrl,
      baseSnapshot: r.baseSnapshot,
      backupBlob: r.backupBlobUrl,
      backupSnapshot: r.backupSnapshot,
      fromDiskId: r.fromDiskId,
      fromPoint: r.restoredPoint.id,
      pointTime: pointTimeIso(r.restoredPoint),
      size: r.size,
      restorePoint: r.pointId,
      replaced: r.replaced,
      checkedBy: r.checkedBy,
    },
    [
      rows([
        ["restored", `disk ${r.fromDiskId} point ${r.restoredPoint.id} (${pointTimeIso(r.restoredPoint)})`],
        ["restore", r.restoreId],
        ["diskId", r.diskId],
        ["diskUrl", r.diskUrl],
        ["size", `${r.size} (${formatBytes(r.size)})`],
        ["backupBlob", r.backupBlobUrl],
        ["baseSnapshot", r.baseSnapshot],
        [
          "checked",
          r.checkedBy === "digests"
            ? "every window against the point's digests"
            : "every read against the service's range MD5 (the point has no digests)",
        ],
        ...r.replaced.map((u): [string, string] => ["replaced", `${u} (an earlier restore's target)`]),
      ]),
      "",
      `Backups of the restored disk continue incrementally: diskdelta backup ${r.diskId}`,
      "To attach it to a VM as a managed disk:",
      `  az disk create -g <resource-group> -n ${r.diskId} --source ${r.diskUrl} --source-storage-account-id <id of the disk's storage account>`,
      `  az vm disk attach -g <resource-group> --vm-name <vm> --name ${r.diskId}`,
    ].join("\n"),
  );
}

async function restoreManaged(opts: GlobalOptions, id: string, o: RestoreOptions): Promise<void> {
  const r = await withEngine(opts, (e, bar) =>
    restoreAsManagedDisk(e, id, {
      point: o.point,
      name: o.name,
      overwrite: Boolean(o.overwrite),
      allowDamaged: o.allowDamaged,
      resourceGroup: o.resourceGroup,
      sku: o.sku,
      zone: o.zone,
      location: o.location,
      onProgress: (position, size, bytes) =>
        bar.update({ phase: "restoring", position, size, bytesDone: bytes }),
    }),
  );
  print(
    opts,
    {
      restoreId: r.restoreId,
      diskId: r.diskId,
      managedDiskId: r.managedDiskId,
      location: r.location,
      sku: r.sku,
      zone: r.zone,
      uploadSizeBytes: r.uploadSizeBytes,
      footer: r.footer,
      baseSnapshot: r.baseSnapshot,
      backupBlob: r.backupBlobUrl,
      backupSnapshot: r.backupSnapshot,
      fromDiskId: r.fromDiskId,
      fromPoint: r.restoredPoint.id,
      pointTime: pointTimeIso(r.restoredPoint),
      size: r.size,
      restorePoint: r.pointId,
      replaced: r.replaced,
      checkedBy: r.checkedBy,
      attach: r.attach,
    },
    [
      rows([
        ["restored", `disk ${r.fromDiskId} point ${r.restoredPoint.id} (${pointTimeIso(r.restoredPoint)})`],
        ["restore", r.restoreId],
        ["diskId", r.diskId],
        ["managedDisk", r.managedDiskId],
        ["where", `${r.location}${r.zone ? ` zone ${r.zone}` : ""}, ${r.sku}`],
        [
          "size",
          `${r.uploadSizeBytes} (${formatBytes(r.uploadSizeBytes)}, ${r.footer === "kept" ? "the point's own VHD footer" : "with a VHD footer diskdelta added"})`,
        ],
        ["backupBlob", r.backupBlobUrl],
        ["baseSnapshot", r.baseSnapshot],
        [
          "checked",
          r.checkedBy === "digests"
            ? "every window against the point's digests"
            : "every read against the service's range MD5 (the point has no digests)",
        ],
        ...r.replaced.map((u): [string, string] => ["replaced", `${u} (an earlier restore's target)`]),
      ]),
      "",
      `Backups of the restored disk continue incrementally: diskdelta backup ${r.diskId}`,
      "To use it, attach it to a VM as a data disk, or create a VM from it as its OS disk:",
      ...r.attach.map((c) => `  ${c}`),
    ].join("\n"),
  );
}

async function restoreFile(opts: GlobalOptions, id: string, o: RestoreOptions): Promise<void> {
  const r = await withEngine(opts, (e, bar) =>
    restoreToFile(e, id, {
      point: o.point,
      path: o.toFile ?? "",
      overwrite: Boolean(o.overwrite),
      allowDamaged: o.allowDamaged,
      onProgress: (done, size, downloaded) =>
        bar.update({ phase: "restoring", position: done, size, bytesDone: downloaded }),
    }),
  );
  print(
    opts,
    {
      diskId: r.diskId,
      pointId: r.pointId,
      path: r.path,
      size: r.size,
      bytesDownloaded: r.bytesDownloaded,
      bytesWritten: r.bytesWritten,
      resumedFrom: r.resumedFrom,
      checkedBy: r.checkedBy,
    },
    rows([
      ["file", r.path],
      ["restored", `disk ${r.diskId} point ${r.pointId}`],
      ["size", `${r.size} (${formatBytes(r.size)}), sparse`],
      ["downloaded", `${r.bytesDownloaded} (${formatBytes(r.bytesDownloaded)})`],
      [
        "checked",
        r.checkedBy === "digests"
          ? "every window against the point's digests"
          : "every read against the service's range MD5",
      ],
      ...(r.resumedFrom ? ([["resumedFrom", String(r.resumedFrom)]] as Array<[string, string]>) : []),
    ]),
  );
}

export async function verifyCommand(opts: GlobalOptions, id: string, o: { point: string }): Promise<void> {
  const r = await withEngine(opts, (e) => verifyPoint(e, id, { point: o.point }));
  print(
    opts,
    {
      diskId: r.diskId,
      pointId: r.pointId,
      ok: r.ok,
      method: r.method,
      verifiedAt: r.verifiedAt,
      bytesChecked: r.bytesChecked,
      windowsChecked: r.windowsChecked,
      firstDifference: r.firstDifference,
      digestsUrl: r.digestsUrl,
      result: r.summary,
    },
    rows([
      ["restore point", `${r.pointId} of disk ${r.diskId}`],
      [
        "against",
        r.method === "source-snapshot" ? `source snapshot ${r.sourceSnapshot}` : `digests ${r.digestsUrl}`,
      ],
      ["checked", `${r.windowsChecked} windows, ${formatBytes(r.bytesChecked)}`],
      ["result", r.ok ? "ok" : "FAILED"],
      ...(r.firstDifference
        ? ([
            ["first difference", `[${r.firstDifference.start}, ${r.firstDifference.end})`],
            ["in range", `[${r.firstDifference.range.start}, ${r.firstDifference.range.end})`],
            ["why", r.firstDifference.detail],
          ] as Array<[string, string]>)
        : []),
      ...(r.ok && r.digestsUrl && r.method === "source-snapshot"
        ? ([["digests", `recorded in ${r.digestsUrl}`]] as Array<[string, string]>)
        : []),
    ]),
  );
  if (!r.ok) throw new VerifyFailedError(r);
}

function plannedJson(p: PlannedPoint) {
  return {
    id: p.id,
    time: new Date(p.time).toISOString(),
    createdAt: p.createdAt,
    backupSnapshot: p.backupSnapshot,
    reasons: p.reasons,
  };
}

export async function pruneCommand(opts: GlobalOptions, id: string, o: { dryRun?: boolean }): Promise<void> {
  const r = await withEngine(opts, (e) => applyRetention(e, id, { dryRun: Boolean(o.dryRun) }));
  const gone = new Set(r.deleted);
  const time = (p: PlannedPoint) => new Date(p.time).toISOString().replace(/\.\d+Z$/, "Z");
  const human = [
    `disk ${r.diskId} keeps: ${describePolicy(r.policy)}${r.dryRun ? " (dry run: nothing deleted)" : ""}`,
    table(
      [
        ["ACTION", "RESTORE POINT", "TIME", "WHY"],
        ...r.keep.map((p) => ["keep", p.id, time(p), p.reasons.join("; ")]),
        ...r.delete.map((p) => [
          r.dryRun ? "would delete" : gone.has(p.id) ? "deleted" : "kept",
          p.id,
          time(p),
          r.spared.find((s) => s.id === p.id)?.reason ?? p.reasons.join("; "),
        ]),
      ],
      100,
      [3],
      { 3: "end" },
    ),
  ];
  print(
    opts,
    {
      diskId: r.diskId,
      dryRun: r.dryRun,
      policy: {
        keepLast: r.policy.last,
        keepDaily: r.policy.daily,
        keepWeekly: r.policy.weekly,
        keepMonthly: r.policy.monthly,
      },
      keep: r.keep.map(plannedJson),
      delete: r.delete.map(plannedJson),
      deleted: r.deleted,
      spared: r.spared,
    },
    human.join("\n"),
  );
}
