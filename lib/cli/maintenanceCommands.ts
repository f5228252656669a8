/**
 * The maintenance commands: `verify` (prove a restore point equals its source snapshot, or its
 * recorded digests), `prune` (apply the retention policy, or list what it would delete with
 * --dry-run), `disk set` (change a disk's retention) and the --keep-* options of `disk add`.
 * Registered by main.ts through `registerMaintenanceCommands`, like restoreCommands.ts. Output
 * follows main.ts: --json prints stable keys on stdout; bad input is an InputError (exit 2); a
 * failed verification prints its report and exits 1.
 */
import { Option, type Command } from "commander";
import {
  InputError,
  parseRetention,
  RETENTION_OPTIONS,
  setRetention,
  type RetentionInput,
} from "../backup/disks";
import type { DiskRecord } from "../lineage/types";
import { applyRetention, type PlannedPoint } from "../retention/apply";
import { DEFAULT_POLICY, describePolicy, MAX_RETAIN, policyOf } from "../retention/policy";
import { verifyPoint, VerifyFailedError } from "../restore/verify";
import { retentionJson } from "../app/views";
import { print, rows, type GlobalOptions, type WithEngine } from "./output";
import { formatBytes } from "./progress";

interface KeepOptions {
  keepLast?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
}

function retentionInput(o: KeepOptions): RetentionInput {
  return {
    retainLast: o.keepLast,
    retainDaily: o.keepDaily,
    retainWeekly: o.keepWeekly,
    retainMonthly: o.keepMonthly,
  };
}

/** The --keep-* options; `withDefaults` shows the defaults `disk add` stores. */
function keepOptions(withDefaults: boolean): Option[] {
  const d = (n: number) => (withDefaults ? ` (default ${n})` : "");
  return [
    new Option(
      `${RETENTION_OPTIONS.retainLast} <n>`,
      `keep the newest n restore points${d(DEFAULT_POLICY.last)}`,
    ),
    new Option(
      `${RETENTION_OPTIONS.retainDaily} <n>`,
      `keep the newest point of each of the last n days with points${d(DEFAULT_POLICY.daily)}`,
    ),
    new Option(
      `${RETENTION_OPTIONS.retainWeekly} <n>`,
      `keep the newest point of each of the last n ISO weeks with points${d(DEFAULT_POLICY.weekly)}`,
    ),
    new Option(
      `${RETENTION_OPTIONS.retainMonthly} <n>`,
      `keep the newest point of each of the last n months with points${d(DEFAULT_POLICY.monthly)}`,
    ),
  ];
}

/** The retention part of a disk, as `disk set` prints it (and `disk list` may). */
/** E.g. "last 14, daily 0, weekly 4, monthly 12": a column for `disk list`. */
export function retentionSummary(disk: DiskRecord): string {
  return describePolicy(policyOf(disk));
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

export function registerMaintenanceCommands(
  program: Command,
  globals: () => GlobalOptions,
  withEngine: WithEngine,
): void {
  const disk = program.commands.find((c) => c.name() === "disk");
  if (!disk) throw new Error("registerMaintenanceCommands needs the 'disk' command group registered first");
  addKeepOptionsToDiskAdd(disk);

  const set = disk
    .command("set <id>")
    .description(
      `change a disk's retention policy (each count 0-${MAX_RETAIN}; the newest point is always kept)`,
    );
  for (const option of keepOptions(false)) set.addOption(option);
  set.action(async (id: string, o: KeepOptions) => {
    const updated = await withEngine(globals(), (e) => setRetention(e, id, retentionInput(o)));
    print(
      globals(),
      { id: updated.id, ...retentionJson(updated) },
      `disk ${updated.id} keeps: ${retentionSummary(updated)}`,
    );
  });

  program
    .command("verify <id>")
    .description(
      "prove a restore point equals its source snapshot (or, once that is gone, the digests recorded when it was verified)",
    )
    .option("--point <point>", "a restore point id, 'latest' or an ISO time", "latest")
    .action(async (id: string, o: { point: string }) => {
      const r = await withEngine(globals(), (e) => verifyPoint(e, id, { point: o.point }));
      print(
        globals(),
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
            r.method === "source-snapshot"
              ? `source snapshot ${r.sourceSnapshot}`
              : `digests ${r.digestsUrl}`,
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
    });

  program
    .command("prune <id>")
    .description("apply the disk's retention policy now: delete restore points it does not keep")
    .option("--dry-run", "list what would be deleted and why; delete nothing")
    .action(async (id: string, o: { dryRun?: boolean }) => {
      const r = await withEngine(globals(), (e) => applyRetention(e, id, { dryRun: Boolean(o.dryRun) }));
      const gone = new Set(r.deleted);
      const human = [
        `disk ${r.diskId} keeps: ${describePolicy(r.policy)}${r.dryRun ? " (dry run: nothing deleted)" : ""}`,
        ...r.keep.map((p) => `keep    ${p.id}  ${new Date(p.time).toISOString()}  ${p.reasons.join("; ")}`),
        ...r.delete.map(
          (p) =>
            `${r.dryRun ? "would delete" : gone.has(p.id) ? "deleted" : "kept"}  ${p.id}  ${new Date(p.time).toISOString()}  ${
              r.spared.find((s) => s.id === p.id)?.reason ?? p.reasons.join("; ")
            }`,
        ),
      ];
      print(
        globals(),
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
    });
}

/**
 * `disk add` is main.ts's; this adds its --keep-* options, checked before the add runs (bad
 * counts exit 2 with nothing registered). main.ts passes them to addDisk with
 * `retentionFromOptions`, so the disk row is written once, with its policy.
 */
function addKeepOptionsToDiskAdd(disk: Command): void {
  const add = disk.commands.find((c) => c.name() === "add");
  if (!add) throw new Error("registerMaintenanceCommands needs 'disk add' registered first");
  for (const option of keepOptions(true)) add.addOption(option);
  add.hook("preAction", (_this, action) => {
    const { problems } = parseRetention(retentionInput(action.opts<KeepOptions>()));
    if (problems.length) throw new InputError(problems);
  });
}

/** The --keep-* options of `disk add` as addDisk's `retention` input (absent ones stay absent). */
export function retentionFromOptions(options: object): RetentionInput {
  return retentionInput(options as KeepOptions);
}
