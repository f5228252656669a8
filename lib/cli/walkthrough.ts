/**
 * `npm run demo`: Microsoft's "back up VM disks with incremental snapshots" walkthrough, carried out
 * by diskdelta on the embedded storage (or, when AzureWebJobsStorage is set, on the account it
 * names). Guarantees: it can be run again and again — the first run creates the disk
 * `mypremiumdisk`, registers it and takes a full backup; every run then writes and clears pages of
 * the disk, takes an incremental backup and prints the lineage (runs and restore points), so each
 * run adds to the history the last one left in the data folder. It goes through the same use cases
 * as the CLI (addDisk, backupDisk), never prints a key, and exits non-zero with the reason on
 * stderr (the CLI's exit codes) when a step fails.
 */
import crypto from "node:crypto";
import { backupDisk, type Progress } from "../backup/run";
import type { Engine } from "../compose";
import { exitCodeOf } from "../core/errors";
import type { Logger } from "../core/logger";
import type { RunRecord } from "../lineage/types";
import { intersect, normalize, PAGE_SIZE, subtract, totalBytes, type PageRange } from "../ranges";
import type { BlobAddress } from "../storage/port";
import {
  BACKUP_BLOB,
  DISK_ID,
  ensureRegistered,
  ensureSourceDisk,
  KiB,
  openWalkthroughEngine,
  percentOf,
  SOURCE_BLOB,
  SOURCE_CONTAINER,
  validRanges,
  walkthroughBlob,
  where,
  writePages,
  type Say,
} from "../host/walkthroughDisk";
import { duration, table } from "./format";
import { formatBytes, ProgressBar } from "./progress";

/** Narration on stdout; the progress bar (stderr, terminals only) is cleared before each line. */
class Narrator implements Say {
  bar?: ProgressBar;

  say(line = ""): void {
    this.bar?.done();
    process.stdout.write(`${line}\n`);
  }

  step(n: number, title: string): void {
    this.say();
    this.say(`${n}. ${title}`);
  }

  logger(): Logger {
    return {
      info: (m) => this.say(`   · ${m}`),
      warn: (m) => {
        this.bar?.done();
        process.stderr.write(`warning: ${m}\n`);
      },
      // Failures reach the user once, from the final catch, with the exit code.
      error: () => undefined,
    };
  }
}

/** A random page-aligned range of at most `length` bytes inside one of `ranges`, or undefined if there is none. */
function pickInside(ranges: PageRange[], length: number): PageRange | undefined {
  if (ranges.length === 0) return undefined;
  const host = ranges[crypto.randomInt(ranges.length)];
  const pages = Math.min(length, host.end - host.start) / PAGE_SIZE;
  const hostPages = (host.end - host.start) / PAGE_SIZE;
  const start = host.start + crypto.randomInt(hostPages - pages + 1) * PAGE_SIZE;
  return { start, end: start + pages * PAGE_SIZE };
}

function pickAnywhere(size: number, length: number): PageRange {
  const start = crypto.randomInt((size - length) / PAGE_SIZE + 1) * PAGE_SIZE;
  return { start, end: start + length };
}

/** What the walkthrough changed on the disk since its last backup, as a VM would between two backup windows. */
interface Changes {
  written: number;
  cleared: number;
}

async function changeDisk(
  narrator: Narrator,
  engine: Engine,
  blob: BlobAddress,
  size: number,
): Promise<Changes> {
  const before = await validRanges(engine.storage, blob, size);
  const clears: PageRange[] = [];
  const writes: PageRange[] = [];
  // Clears first, then writes: a page both cleared and rewritten ends up written.
  const clear = pickInside(before, 512 * KiB);
  if (clear) {
    await engine.storage.clear(blob, clear);
    clears.push(clear);
    narrator.say(`     cleared ${where(clear)} (a deleted file, trimmed: the pages become empty)`);
  }
  const planned: { what: string; range: PageRange | undefined }[] = [
    { what: "rewrote part of a file", range: pickInside(subtract(before, clears), 256 * KiB) },
    { what: "new data", range: pickAnywhere(size, 64 * KiB) },
    { what: "a log entry", range: pickAnywhere(size, 4 * KiB) },
  ];
  for (const { what, range } of planned) {
    if (!range) continue;
    await writePages(engine.storage, blob, range);
    writes.push(range);
    narrator.say(`     wrote ${where(range)} (${what})`);
  }
  const written = totalBytes(normalize(writes));
  // Only pages that held data and were not written again count as cleared.
  const cleared = totalBytes(subtract(intersect(clears, before), writes));
  narrator.say(
    `   changed since the last backup: ${formatBytes(written)} written, ${formatBytes(cleared)} cleared, of a ${formatBytes(size)} disk`,
  );
  return { written, cleared };
}

async function backUp(narrator: Narrator, engine: Engine, copying: string): Promise<RunRecord> {
  const bar = new ProgressBar();
  narrator.bar = bar;
  let phase: Progress["phase"] | undefined;
  try {
    narrator.say(`   taking a snapshot of ${SOURCE_BLOB}…`);
    return await backupDisk(engine, DISK_ID, {
      trigger: "cli",
      onProgress: (p) => {
        if (p.phase !== phase) {
          phase = p.phase;
          if (phase === "copying") narrator.say(`   ${copying}…`);
          if (phase === "sealing") narrator.say(`   sealing: snapshot of ${BACKUP_BLOB} → restore point…`);
        }
        bar.update({
          phase: p.phase,
          position: p.position,
          size: p.size,
          bytesDone: p.bytesCopied,
          bytesToDo: p.bytesPlanned,
          bytesCleared: p.bytesCleared,
        });
      },
    });
  } finally {
    bar.finish();
    narrator.bar = undefined;
  }
}

function describeRun(narrator: Narrator, run: RunRecord, expected?: Changes): void {
  const size = run.sourceSize ?? 0;
  narrator.say(
    `   run ${run.id}: ${run.kind}, detection ${run.detection ?? "-"}, ${run.state} in ${duration(run)}`,
  );
  if (run.reason) narrator.say(`     why ${run.detection}: ${run.reason}`);
  narrator.say(
    `     copied ${formatBytes(run.bytesCopied)} (${run.bytesCopied} bytes, ${percentOf(run.bytesCopied, size)} of the ${formatBytes(size)} disk), cleared ${formatBytes(run.bytesCleared)}`,
  );
  if (expected) {
    const exact = run.bytesCopied === expected.written && run.bytesCleared === expected.cleared;
    narrator.say(
      exact
        ? `     exactly the pages changed since the last backup, nothing more`
        : `     the walkthrough changed ${expected.written} bytes written and ${expected.cleared} cleared; the run found ${run.bytesCopied} and ${run.bytesCleared}`,
    );
  }
  narrator.say(`     restore point ${run.restorePoint} = snapshot ${run.backupSnapshot} of ${BACKUP_BLOB}`);
}

async function printLineage(narrator: Narrator, engine: Engine): Promise<void> {
  const runs = await engine.lineage.listRuns(DISK_ID, 1000);
  const points = await engine.lineage.listPoints(DISK_ID, 1000);
  narrator.say(`   runs of ${DISK_ID}, newest first (${runs.length}):`);
  narrator.say(
    indent(
      table([
        ["RUN", "KIND", "DETECTION", "STATE", "DURATION", "COPIED", "CLEARED", "RESTORE POINT"],
        ...runs.map((r) => [
          r.id,
          r.kind,
          r.detection ?? "-",
          r.state,
          duration(r),
          formatBytes(r.bytesCopied),
          formatBytes(r.bytesCleared),
          r.restorePoint ?? (r.error ? `error: ${r.error}` : "-"),
        ]),
      ]),
    ),
  );
  narrator.say();
  narrator.say(`   restore points, newest first (${points.length}):`);
  narrator.say(
    indent(
      table([
        ["RESTORE POINT", "KIND", "CREATED", "SIZE", "BACKUP SNAPSHOT"],
        ...points.map((p) => [p.id, p.kind, p.createdAt, formatBytes(p.size), p.backupSnapshot]),
      ]),
    ),
  );
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `     ${l}`)
    .join("\n");
}

export async function walkthrough(): Promise<void> {
  const narrator = new Narrator();
  narrator.say("diskdelta walkthrough: back up a VM disk with incremental snapshots");
  const { engine, accounts } = await openWalkthroughEngine(narrator.logger());
  try {
    narrator.say(`storage: ${accounts.where}`);
    let step = 0;
    narrator.step(++step, `The disk: page blob ${SOURCE_BLOB} in container ${SOURCE_CONTAINER}`);
    const size = await ensureSourceDisk(narrator, engine.storage, accounts);
    const blob = walkthroughBlob(accounts);

    narrator.step(++step, `Protect it: register disk ${DISK_ID} with backup blob ${BACKUP_BLOB}`);
    let disk = await ensureRegistered(narrator, engine, accounts);

    if (!disk.baseSnapshot) {
      narrator.step(
        ++step,
        `Full backup (the article's ${SOURCE_BLOB}_ss1 → ${BACKUP_BLOB}): snapshot, copy the valid ranges only, seal`,
      );
      describeRun(
        narrator,
        await backUp(narrator, engine, `copying the disk's valid ranges to ${BACKUP_BLOB}`),
      );
      disk = (await engine.lineage.getDisk(DISK_ID)) ?? disk;
    }

    narrator.step(++step, `The VM works: write and clear pages of ${SOURCE_BLOB}`);
    const changes = await changeDisk(narrator, engine, blob, size);

    // The article numbers the disk's snapshots ss1, ss2, …: one per restore point.
    const next = (await engine.lineage.listPoints(DISK_ID, 1000)).length + 1;
    narrator.step(
      ++step,
      `Incremental backup (the article's ${SOURCE_BLOB}_ss${next}): snapshot, find the pages changed since the base, copy and clear only those, seal, advance the base`,
    );
    describeRun(
      narrator,
      await backUp(narrator, engine, `finding the changed pages and applying them to ${BACKUP_BLOB}`),
      changes,
    );

    narrator.step(++step, "The lineage");
    await printLineage(narrator, engine);

    narrator.say();
    narrator.say(`Run 'npm run demo' again for another incremental cycle, or look around with`);
    narrator.say(`  npx diskdelta disk list`);
    narrator.say(`  npx diskdelta runs ${DISK_ID}`);
    narrator.say(`  npx diskdelta points ${DISK_ID}`);
    narrator.say(
      `  npx diskdelta verify ${DISK_ID}                      (prove the newest point equals its snapshot)`,
    );
    narrator.say(
      `  npx diskdelta restore ${DISK_ID} --point latest      (a new disk, backed up incrementally from there)`,
    );
    narrator.say(`and 'npm start' serves the same disk through the Functions app (HTTP API, timer, queues).`);
    if (engine.embedded) narrator.say(`Delete ${engine.config.home} to start over.`);
  } finally {
    await engine.close();
  }
}

if (require.main === module) {
  walkthrough().then(
    () => undefined,
    (err: unknown) => {
      process.stderr.write(`diskdelta walkthrough: ${(err as Error)?.message ?? String(err)}\n`);
      process.exitCode = exitCodeOf(err);
    },
  );
}
