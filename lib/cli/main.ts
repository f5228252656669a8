/**
 * The `diskdelta` command line. Every command has --help; --json prints machine-readable output
 * on stdout with stable keys; human output is a short table. Failures print one message naming
 * the problem and the fix on stderr and exit non-zero (1 for failed work, 2 for bad input).
 */
import path from "node:path";
import { Command, CommanderError, Option } from "commander";
import { addDisk, InputError, requireDisk } from "../backup/disks";
import { backupDisk, type Logger } from "../backup/run";
import { ConfigError } from "../config";
import { openEngine, type Engine } from "../engine";
import { BusyError, type RunRecord } from "../lineage/types";
import { diskJson, pointJson, runJson } from "../app/views";
import { UrlError } from "../azure/urls";
import { formatBytes, ProgressBar } from "./progress";
import { registerRestoreCommands } from "./restoreCommands";
import { registerMaintenanceCommands, retentionFromOptions, retentionSummary } from "./maintenanceCommands";
import { print, type GlobalOptions } from "./output";
import { registerWorkerCommand } from "./workerCommand";

/** Kept exported here for callers that imported it from the CLI before it moved to lib/app/views. */
export { runJson };

export function stderrLogger(verbose: boolean): Logger {
  return {
    info: (m) => {
      if (verbose) process.stderr.write(`${m}\n`);
    },
    warn: (m) => process.stderr.write(`warning: ${m}\n`),
    error: (m) => {
      if (verbose) process.stderr.write(`error: ${m}\n`);
    },
  };
}

async function withEngine<T>(opts: GlobalOptions, work: (engine: Engine) => Promise<T>): Promise<T> {
  const engine = await openEngine(stderrLogger(Boolean(opts.verbose)));
  try {
    return await work(engine);
  } finally {
    await engine.close();
  }
}

/** Left-aligned columns, two spaces apart; the first row is the header. */
export function table(rows: string[][]): string {
  if (rows.length === 0) return "";
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

export function duration(run: RunRecord): string {
  if (!run.finishedAt) return "-";
  return `${((Date.parse(run.finishedAt) - Date.parse(run.startedAt)) / 1000).toFixed(1)}s`;
}

export function buildProgram(): Command {
  const program = new Command("diskdelta")
    .description(
      "Incremental backups of Azure page-blob disks: copy only the pages that changed, restore any point.",
    )
    .option("--json", "print machine-readable JSON on stdout")
    .option("-v, --verbose", "log each step on stderr")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  const globals = () => program.opts<GlobalOptions>();

  const disk = program.command("disk").description("register and list protected disks");
  disk
    .command("add <id>")
    .description("register a page blob to protect")
    .requiredOption(
      "--source <pageBlobUrl>",
      "the disk: https://<account>.blob.core.windows.net/<container>/<blob> or http://127.0.0.1:10000/<account>/<container>/<blob>",
    )
    .requiredOption("--backup-account <accountUrl>", "blob service URL of the backup account")
    .option("--backup-container <name>", "container in the backup account", "diskdelta")
    .option("--backup-blob <name>", "backup blob name (default: the disk id)")
    .action(
      async (
        id: string,
        o: { source: string; backupAccount: string; backupContainer: string; backupBlob?: string },
      ) => {
        const added = await withEngine(globals(), (e) =>
          addDisk(e, {
            id,
            source: o.source,
            backupAccount: o.backupAccount,
            backupContainer: o.backupContainer,
            backupBlob: o.backupBlob,
            retention: retentionFromOptions(o),
          }),
        );
        print(
          globals(),
          diskJson(added),
          `registered disk ${added.id}: ${added.sourceUrl} → ${added.backupAccountUrl}/${added.backupContainer}/${added.backupBlob}`,
        );
      },
    );
  disk
    .command("list")
    .description("list registered disks")
    .action(async () => {
      const disks = await withEngine(globals(), (e) => e.lineage.listDisks());
      print(
        globals(),
        disks.map(diskJson),
        disks.length === 0
          ? "no disks registered; add one with 'diskdelta disk add'"
          : table([
              ["ID", "SOURCE", "BACKUP", "LAST SUCCESS", "ACTIVE RUN", "KEEPS"],
              ...disks.map((d) => [
                d.id,
                d.sourceUrl,
                `${d.backupAccountUrl}/${d.backupContainer}/${d.backupBlob}`,
                d.lastSuccessAt ?? "never",
                d.activeRunId ?? "-",
                retentionSummary(d),
              ]),
            ]),
      );
    });

  program
    .command("backup <id>")
    .description("run one backup of a disk now: full the first time, incremental after")
    .action(async (id: string) => {
      const bar = new ProgressBar();
      const run = await withEngine(globals(), async (e) => {
        await requireDisk(e, id);
        try {
          return await backupDisk(e, id, { trigger: "cli", onProgress: (p) => bar.update(p) });
        } finally {
          bar.done();
        }
      });
      print(
        globals(),
        runJson(run),
        table([
          ["run", run.id],
          ["kind", `${run.kind} (${run.detection ?? "-"})`],
          ["state", run.state],
          ["bytesCopied", `${run.bytesCopied} (${formatBytes(run.bytesCopied)})`],
          ["bytesCleared", `${run.bytesCleared} (${formatBytes(run.bytesCleared)})`],
          ["restorePoint", run.restorePoint ?? "-"],
          ["backupSnapshot", run.backupSnapshot ?? "-"],
          ...(run.reason ? [["reason", run.reason]] : []),
        ]),
      );
    });

  program
    .command("runs <id>")
    .description("show a disk's run history, newest first")
    .addOption(new Option("--limit <n>", "how many runs").default("20").argParser(positiveInt("--limit")))
    .action(async (id: string, o: { limit: string | number }) => {
      const runs = await withEngine(globals(), async (e) => {
        await requireDisk(e, id);
        return e.lineage.listRuns(id, Number(o.limit));
      });
      print(
        globals(),
        runs.map(runJson),
        runs.length === 0
          ? `disk ${id} has no runs yet; start one with 'diskdelta backup ${id}'`
          : table([
              ["RUN", "KIND", "STATE", "STARTED", "DURATION", "COPIED", "CLEARED", "RESTORE POINT"],
              ...runs.map((r) => [
                r.id,
                r.kind,
                r.state,
                r.startedAt,
                duration(r),
                formatBytes(r.bytesCopied),
                formatBytes(r.bytesCleared),
                r.restorePoint ?? (r.error ? `error: ${r.error}` : "-"),
              ]),
            ]),
      );
    });

  program
    .command("points <id>")
    .description("list a disk's restore points, newest first")
    .addOption(new Option("--limit <n>", "how many points").default("50").argParser(positiveInt("--limit")))
    .action(async (id: string, o: { limit: string | number }) => {
      const points = await withEngine(globals(), async (e) => {
        await requireDisk(e, id);
        return e.lineage.listPoints(id, Number(o.limit));
      });
      print(
        globals(),
        points.map(pointJson),
        points.length === 0
          ? `disk ${id} has no restore points yet`
          : table([
              ["RESTORE POINT", "KIND", "CREATED", "SIZE", "BACKUP SNAPSHOT"],
              ...points.map((p) => [p.id, p.kind, p.createdAt, formatBytes(p.size), p.backupSnapshot]),
            ]),
      );
    });
  registerRestoreCommands(program, globals, withEngine);
  registerMaintenanceCommands(program, globals, withEngine);
  registerWorkerCommand(program, globals);
  return program;
}

function positiveInt(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n <= 0)
      throw new InputError([`${name} ${value} is not a positive integer`]);
    return n;
  };
}

/** Exit codes: 0 success, 1 the work failed, 2 bad input or configuration, 3 busy. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof BusyError) return 3;
  if (err instanceof InputError || err instanceof ConfigError || err instanceof UrlError) return 2;
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed the message (or the help, whose exit code is 0).
      return err.exitCode === 0 ? 0 : 2;
    }
    process.stderr.write(`diskdelta: ${(err as Error).message ?? String(err)}\n`);
    return exitCodeFor(err);
  }
}

/**
 * Run when this file is the entry, or when bin/diskdelta.js (which only requires this file) is.
 * The bin is compared by `require.main.filename`, which Node resolves through symlinks: npm runs a
 * package bin through a symlink (node_modules/.bin/diskdelta, a global install), where
 * `process.argv[1]` is the link's own path and names no "bin/diskdelta.js".
 */
const BIN = path.resolve(__dirname, "../../../bin/diskdelta.js");
if (require.main === module || require.main?.filename === BIN) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
