/**
 * The `restore` command: restore a restore point as a new disk (registered, so its backups
 * continue incrementally) or, with --to-file, as a sparse local image that a rerun resumes.
 * Registered by main.ts through `registerRestoreCommands`, with its global options and engine
 * opener, so this file owns restore's whole CLI surface. Output follows main.ts: --json prints
 * stable keys on stdout (the new disk id is `diskId`); bad input is an InputError (exit 2).
 */
import type { Command } from "commander";
import { InputError } from "../backup/disks";
import { pointTimeIso } from "../restore/points";
import { restoreAsNewDisk } from "../restore/restore";
import { restoreToFile } from "../restore/toFile";
import { print, rows, type GlobalOptions, type WithEngine } from "./output";
import { formatBytes, ProgressBar } from "./progress";

interface RestoreCliOptions {
  point: string;
  name?: string;
  overwrite?: boolean;
  toFile?: string;
}

export function registerRestoreCommands(
  program: Command,
  globals: () => GlobalOptions,
  withEngine: WithEngine,
): void {
  program
    .command("restore <id>")
    .description(
      "restore a restore point as a new disk (registered for incremental backups), or as a sparse image file with --to-file",
    )
    .requiredOption(
      "--point <point>",
      "a restore point id (see 'diskdelta points <id>'), 'latest', or an ISO time",
    )
    .option(
      "--name <name>",
      "id of the new disk, also its blob and backup blob name (default <id>-restored-<point time>)",
    )
    .option("--overwrite", "replace existing blobs (or an existing --to-file file)")
    .option(
      "--to-file <path>",
      "write the disk image to a local sparse file instead; rerun the same command to resume",
    )
    .action(async (id: string, o: RestoreCliOptions) => {
      if (o.toFile !== undefined) {
        if (o.name !== undefined) throw new InputError(["--name and --to-file cannot be combined"]);
        await restoreFile(globals(), withEngine, id, o);
        return;
      }
      const r = await withEngine(globals(), (e) =>
        restoreAsNewDisk(e, id, { point: o.point, name: o.name, overwrite: Boolean(o.overwrite) }),
      );
      print(
        globals(),
        {
          diskId: r.diskId,
          diskUrl: r.diskUrl,
          baseSnapshot: r.baseSnapshot,
          backupBlob: r.backupBlobUrl,
          backupSnapshot: r.backupSnapshot,
          fromDiskId: r.fromDiskId,
          fromPoint: r.restoredPoint.id,
          pointTime: pointTimeIso(r.restoredPoint),
          size: r.size,
          runId: r.runId,
          restorePoint: r.pointId,
        },
        [
          rows([
            [
              "restored",
              `disk ${r.fromDiskId} point ${r.restoredPoint.id} (${pointTimeIso(r.restoredPoint)})`,
            ],
            ["diskId", r.diskId],
            ["diskUrl", r.diskUrl],
            ["size", `${r.size} (${formatBytes(r.size)})`],
            ["backupBlob", r.backupBlobUrl],
            ["baseSnapshot", r.baseSnapshot],
          ]),
          "",
          `Backups of the restored disk continue incrementally: diskdelta backup ${r.diskId}`,
          "To attach it to a VM as a managed disk:",
          `  az disk create -g <resource-group> -n ${r.diskId} --source ${r.diskUrl} --source-storage-account-id <id of the disk's storage account>`,
          `  az vm disk attach -g <resource-group> --vm-name <vm> --name ${r.diskId}`,
        ].join("\n"),
      );
    });
}

async function restoreFile(
  opts: GlobalOptions,
  withEngine: WithEngine,
  id: string,
  o: RestoreCliOptions,
): Promise<void> {
  const bar = new ProgressBar();
  const r = await withEngine(opts, async (e) => {
    try {
      return await restoreToFile(e, id, {
        point: o.point,
        path: o.toFile ?? "",
        overwrite: Boolean(o.overwrite),
        onProgress: (done, size, downloaded) =>
          bar.update({
            runId: id,
            phase: "copying",
            position: done,
            size,
            bytesCopied: downloaded,
            bytesCleared: 0,
            chunksDone: 0,
          }),
      });
    } finally {
      bar.done();
    }
  });
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
    },
    rows([
      ["file", r.path],
      ["restored", `disk ${r.diskId} point ${r.pointId}`],
      ["size", `${r.size} (${formatBytes(r.size)}), sparse`],
      ["downloaded", `${r.bytesDownloaded} (${formatBytes(r.bytesDownloaded)})`],
      ...(r.resumedFrom ? ([["resumedFrom", String(r.resumedFrom)]] as Array<[string, string]>) : []),
    ]),
  );
}
