/**
 * The `diskdelta` command line. Every command has --help; --json prints machine-readable output
 * on stdout (and only that) with stable keys; human output is a short table. Failures print one
 * message naming the problem and the fix on stderr, in the CLI's words (`--keep-last`, not a field
 * name), and exit non-zero: 1 for failed work, 2 for bad input or configuration, 3 busy. `--help`,
 * `--version` and a bad argument load no Azure SDK: each command's work is imported only when it
 * runs (lib/cli/commands), so they answer as fast as Node starts.
 */
import path from "node:path";
import { Command, CommanderError, Option } from "commander";
import { exitCodeOf, InputError, KindError, messageOf } from "../core/errors";
import type { GlobalOptions } from "./output";
import { version } from "./version";
import { cliWords } from "./words";

function positiveInt(option: string) {
  return (value: string) => {
    if (!/^\d+$/.test(value) || Number(value) <= 0)
      throw new InputError([`${option} ${value} is not a positive whole number`]);
    return Number(value);
  };
}

function keepOptions(withDefaults: boolean): Option[] {
  const d = (n: number) => (withDefaults ? ` (default ${n})` : "");
  return [
    new Option("--keep-last <n>", `keep the newest n restore points${d(14)}`),
    new Option("--keep-daily <n>", `keep the newest point of each of the last n days with points${d(0)}`),
    new Option(
      "--keep-weekly <n>",
      `keep the newest point of each of the last n ISO weeks with points${d(4)}`,
    ),
    new Option(
      "--keep-monthly <n>",
      `keep the newest point of each of the last n months with points${d(12)}`,
    ),
  ];
}

export function buildProgram(): Command {
  const program = new Command("diskdelta")
    .description(
      "Incremental backups of Azure VM disks (managed disks and page blobs): copy only the pages that changed, restore any point.",
    )
    .version(version(), "-V, --version", "print the version")
    .option("--json", "print machine-readable JSON on stdout (and nothing else there)")
    .option("-v, --verbose", "log each step and phase on stderr")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  const globals = () => program.opts<GlobalOptions>();
  const lazy = <M>(load: () => Promise<M>) => load;
  const disks = lazy(() => import("./commands/disks"));
  const backups = lazy(() => import("./commands/backups"));
  const restores = lazy(() => import("./commands/restores"));

  const disk = program.command("disk").description("register, list and change protected disks");
  const add = disk
    .command("add [id]")
    .description(
      "register a disk to protect: a page blob (--source <url>), a managed disk (--source <resource id>), or every disk of a VM (--vm; the id, if given, is the prefix of the disks' ids)",
    )
    .option(
      "--source <urlOrId>",
      "the disk: https://<account>.blob.core.windows.net/<container>/<blob>, or /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/disks/<name>",
    )
    .option(
      "--vm <resourceId>",
      "register each disk of this VM (OS and data) as <vm>-os and <vm>-lun<n> (or <id>-os, <id>-lun<n>)",
    )
    .requiredOption("--backup-account <accountUrl>", "blob service URL of the backup account")
    .option("--backup-container <name>", "container in the backup account", "diskdelta")
    .option("--backup-blob <name>", "backup blob name (default: the disk id)")
    .option("--interval-minutes <n>", "back this disk up every n minutes (default: the schedule's interval)");
  for (const o of keepOptions(true)) add.addOption(o);
  add.action(async (id: string | undefined, o) => (await disks()).addCommand(globals(), id, o));

  disk
    .command("list")
    .description("list registered disks, with their interval and retention")
    .action(async () => (await disks()).listCommand(globals()));

  const set = disk
    .command("set <id>")
    .description(
      "change a disk's retention or interval (each count 0-1000; the newest point is always kept), or move a page-blob disk to its managed disk",
    )
    .option(
      "--interval-minutes <n>",
      "back this disk up every n minutes; 'default' for the schedule's interval",
    )
    .option(
      "--source <managedDiskId>",
      "move a disk registered as a page blob to the managed disk it was converted into; the next backup is a resync that writes only what differs",
    );
  for (const o of keepOptions(false)) set.addOption(o);
  set.action(async (id: string, o) => (await disks()).setCommand(globals(), id, o));

  program
    .command("backup <id>")
    .description(
      "run one backup of a disk now: full the first time, incremental after; nothing changed makes no new point",
    )
    .option("--force", "seal a restore point even if nothing changed")
    .action(async (id: string, o) => (await backups()).backupCommand(globals(), id, o));

  program
    .command("runs <id>")
    .description("show a disk's run history, newest first")
    .addOption(new Option("--limit <n>", "how many runs").default(20).argParser(positiveInt("--limit")))
    .action(async (id: string, o) => (await backups()).runsCommand(globals(), id, o));

  program
    .command("points <id>")
    .description("list a disk's restore points, newest first, with whether and when each was verified")
    .addOption(new Option("--limit <n>", "how many points").default(50).argParser(positiveInt("--limit")))
    .action(async (id: string, o) => (await backups()).pointsCommand(globals(), id, o));

  program
    .command("restore <id>")
    .description(
      "restore a restore point as a new disk (registered for incremental backups), as a new managed disk with --as-managed-disk, or as a sparse image file with --to-file",
    )
    .option(
      "--point <point>",
      "a restore point id (see 'diskdelta points <id>'), 'latest', or an ISO time",
      "latest",
    )
    .option(
      "--name <name>",
      "id of the new disk, also its blob and backup blob name (default <id>-restored-<point time>)",
    )
    .option(
      "--overwrite",
      "replace restore targets an earlier diskdelta restore made (never a registered disk's blobs), or an existing --to-file file",
    )
    .option(
      "--to-file <path>",
      "write the disk image to a local sparse file instead; rerun the same command to resume",
    )
    .option("--allow-damaged", "restore a point that a verify or restore recorded as damaged")
    .option(
      "--as-managed-disk",
      "restore as a new managed disk (an upload of the point's valid ranges), registered for incremental backups",
    )
    .option(
      "--resource-group <group>",
      "with --as-managed-disk: the new disk's resource group, a name or /subscriptions/<id>/resourceGroups/<name> (default: the original disk's)",
    )
    .option(
      "--sku <sku>",
      "with --as-managed-disk: the new disk's sku, e.g. Premium_LRS (default: the original's)",
    )
    .option(
      "--zone <zone>",
      "with --as-managed-disk: availability zone of the new disk (default: the original's)",
    )
    .option(
      "--location <region>",
      "with --as-managed-disk: region of the new disk (default: the original managed disk's)",
    )
    .action(async (id: string, o) => (await restores()).restoreCommand(globals(), id, o));

  program
    .command("verify <id>")
    .description(
      "prove a restore point equals its source snapshot (or, once that is gone, the digests recorded when it was sealed)",
    )
    .option("--point <point>", "a restore point id, 'latest' or an ISO time", "latest")
    .action(async (id: string, o) => (await restores()).verifyCommand(globals(), id, o));

  program
    .command("prune <id>")
    .description("apply the disk's retention policy now: delete restore points it does not keep")
    .option("--dry-run", "list what would be deleted and why; delete nothing")
    .action(async (id: string, o) => (await restores()).pruneCommand(globals(), id, o));

  program
    .command("worker")
    .description(
      "run extra queue workers in this process, on the same storage as 'npm start' (scale-out on one machine)",
    )
    .option("--queues <names>", "comma-separated queues to serve (default: every queue the app listens on)")
    .option(
      "--concurrency <n>",
      "messages of one queue processed at once (default: host.json's batchSize + newBatchThreshold)",
    )
    .option(
      "--lease-seconds <n>",
      "how long a message stays invisible while processed, renewed while it runs; a killed worker's messages return after this (default 600, the Functions host's)",
    )
    .action(async (o) => (await import("./commands/worker")).workerCommand(globals(), o));

  program
    .command("info")
    .description("where diskdelta keeps its data and which storage it uses (no storage is contacted)")
    .action(async () => (await import("./commands/info")).infoCommand(globals()));
  return program;
}

/**
 * Problems of one failure that end in the same long advice (how to sign in, when both the source
 * and the backup account needed a login) keep its first sentence, and the rest is said once, after
 * them: the advice is read once, not twice in a row.
 */
export function sayOnce(message: string): string {
  const lines = message.split("\n");
  const items = lines.filter((l) => l.startsWith("  - "));
  if (items.length < 2 || items.length !== lines.length - 1) return message;
  let common = items[0];
  for (const item of items.slice(1)) while (common && !item.endsWith(common)) common = common.slice(1);
  // The shared advice starts after a ": " and its first sentence stays on each line.
  const start = common.indexOf(": ");
  const advice = start >= 0 ? common.slice(start + 2) : "";
  const firstStop = advice.indexOf(". ");
  if (advice.length < 100 || firstStop < 0) return message;
  const rest = advice.slice(firstStop + 2);
  return [lines[0], ...items.map((l) => l.slice(0, l.length - rest.length - 2)), rest].join("\n");
}

/** The message of a failure in the CLI's words. */
export function describeFailure(err: unknown): string {
  if (err instanceof KindError) return sayOnce(err.render(cliWords));
  return messageOf(err);
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed the message (or the help or version, whose exit code is 0).
      return err.exitCode === 0 ? 0 : 2;
    }
    process.stderr.write(`diskdelta: ${describeFailure(err)}\n`);
    return exitCodeOf(err);
  }
}

/**
 * How long a finished command waits for its last writes to drain before it exits anyway: a socket
 * a stalled server keeps open must never keep a command alive after it has reported its end.
 */
const EXIT_GRACE_MS = 1000;

/**
 * Runs a command as the process's one job, with the exit discipline: the exit code is `run`'s
 * (0 only once the command returned), the process ends at most EXIT_GRACE_MS after that whatever
 * sockets are still open, and a process whose event loop empties while the command has not ended
 * (an awaited answer that can never come: nothing left that could bring it) does not exit quietly
 * with code 0: it says so on stderr and exits 1.
 */
export function runAsProcess(argv: string[], run: (argv: string[]) => Promise<number> = main): void {
  let ended = false;
  process.once("beforeExit", () => {
    if (ended) return;
    process.stderr.write(
      "diskdelta: the command stopped before its work was done (it was waiting for an answer that can no longer come); nothing it was doing is complete\n",
    );
    process.exit(1);
  });
  run(argv).then(
    (code) => {
      ended = true;
      process.exitCode = code;
      setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
    },
    (err: unknown) => {
      // main() reports its own failures; this is a bug in the reporting itself.
      ended = true;
      process.stderr.write(`diskdelta: ${messageOf(err)}\n`);
      process.exit(1);
    },
  );
}

/**
 * Run when this file is the entry, or when bin/diskdelta.js (which only requires this file) is.
 * The bin is compared by `require.main.filename`, which Node resolves through symlinks.
 */
const BIN = path.resolve(__dirname, "../../../bin/diskdelta.js");
if (require.main === module || require.main?.filename === BIN) runAsProcess(process.argv.slice(2));
