/** `backup`, `runs`, `points`. */
import { backupDisk } from "../../backup/run";
import { requireDisk } from "../../disks/register";
import { pointJson, runJson } from "../../app/views";
import { pointTimeIso, type RestorePointRecord, type RunRecord } from "../../lineage/types";
import { formatBytes, rows, table } from "../format";
import { print, type GlobalOptions } from "../output";
import { withEngine } from "./engine";

export async function backupCommand(opts: GlobalOptions, id: string, o: { force?: boolean }): Promise<void> {
  const run = await withEngine(opts, async (e, bar) => {
    await requireDisk(e, id);
    return backupDisk(e, id, {
      trigger: "cli",
      force: o.force,
      // Each phase is named as it starts by the run's own log line (-v); no second line here.
      onProgress: (p) =>
        bar.update({
          phase: p.phase,
          position: p.position,
          size: p.size,
          bytesDone: p.bytesCopied,
          bytesToDo: p.bytesPlanned,
          bytesCleared: p.bytesCleared,
        }),
    });
  });
  print(
    opts,
    runJson(run),
    rows([
      ["run", run.id],
      ["kind", `${run.kind} (${run.detection ?? "-"})`],
      ["state", run.state],
      ["bytesCopied", `${run.bytesCopied} (${formatBytes(run.bytesCopied)})`],
      ["bytesCleared", `${run.bytesCleared} (${formatBytes(run.bytesCleared)})`],
      [
        "restorePoint",
        run.restorePoint ??
          (run.state === "unchanged" ? "- (nothing changed; use --force to seal one anyway)" : "-"),
      ],
      ["backupSnapshot", run.backupSnapshot ?? "-"],
      ...(run.reason ? ([["reason", run.reason]] as Array<[string, string]>) : []),
    ]),
  );
}

function detected(r: RunRecord): string {
  if (r.state === "unchanged") return "unchanged";
  return r.detection === "service-diff"
    ? "diff"
    : r.detection === "valid-ranges"
      ? "valid"
      : (r.detection ?? "-");
}

export async function runsCommand(opts: GlobalOptions, id: string, o: { limit: number }): Promise<void> {
  const runs = await withEngine(opts, async (e) => {
    await requireDisk(e, id);
    return e.lineage.listRuns(id, o.limit);
  });
  print(
    opts,
    runs.map(runJson),
    runs.length === 0
      ? `disk ${id} has no runs yet; start one with 'diskdelta backup ${id}'`
      : table(
          [
            ["RUN", "KIND", "DETECTED", "STATE", "COPIED", "CLEARED", "RESTORE POINT"],
            ...runs.map((r) => [
              r.id,
              r.kind,
              detected(r),
              r.state,
              formatBytes(r.bytesCopied),
              formatBytes(r.bytesCleared),
              r.restorePoint ?? (r.error ? `error: ${r.error}` : "-"),
            ]),
          ],
          100,
          // Run ids stay whole (they are what a user copies); a point id shares the run's suffix.
          // Durations are in --json (startedAt, finishedAt): with them the table passes 100 columns.
          [6],
        ),
  );
}

function verified(p: RestorePointRecord): string {
  if (!p.verifiedAt) return "-";
  const at = p.verifiedAt.replace(/\.\d+Z$/, "Z");
  return `${p.integrity === "failed" ? "FAILED" : "ok"} ${at}`;
}

export async function pointsCommand(opts: GlobalOptions, id: string, o: { limit: number }): Promise<void> {
  const points = await withEngine(opts, async (e) => {
    await requireDisk(e, id);
    return e.lineage.listPoints(id, o.limit);
  });
  print(
    opts,
    points.map(pointJson),
    points.length === 0
      ? `disk ${id} has no restore points yet`
      : table([
          ["RESTORE POINT", "KIND", "TIME", "SIZE", "VERIFIED"],
          ...points.map((p) => [
            p.id,
            p.kind,
            pointTimeIso(p).replace(/\.\d+Z$/, "Z"),
            formatBytes(p.size),
            verified(p),
          ]),
        ]),
  );
}
