/**
 * `npm start`: the app served locally as `func start` would serve it — the HTTP API on
 * http://localhost:<DISKDELTA_HTTP_PORT>/api/..., the timer, and the queue triggers with the
 * host's delivery rules from host.json — on the embedded Azurite, or on the storage that
 * AzureWebJobsStorage names when it is set. Guarantees: the app's queues exist before any
 * trigger runs; with no disk registered, the walkthrough's disk `mypremiumdisk` is created and
 * registered, so there is something to back up at once; it prints where to look (API, example
 * curl lines, data folder) and never a key; SIGINT/SIGTERM stop it cleanly — no new work, every
 * invocation under way finished, then the embedded Azurite closed; a second signal exits at once.
 * `--lease-seconds <n>` shortens how long a message stays invisible while processed (default
 * 600, the host's), so a killed process's messages come back sooner when trying things out.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import type { HttpFunctionSpec } from "../app/register";
import { useApp } from "../compose/runtime";
import { exitCodeOf } from "../core/errors";
import { poisonQueue, QUEUES } from "../queues/messages";
import { ensureWalkthroughDisk, openWalkthroughEngine } from "./walkthroughDisk";
import { discoverFunctions } from "./discover";
import { startHost } from "./host";
import { errorText } from "./invocation";
import { consoleLogger, leaseOption, untilSignal } from "./process";
import { readHostSettings } from "./settings";

function curlExamples(base: string, specs: HttpFunctionSpec[], diskId: string): string[] {
  const has = (route: string, method: string) =>
    specs.some((s) => s.route === route && (s.methods as string[]).includes(method));
  const lines: string[] = [];
  if (has("disks", "GET")) lines.push(`curl -s ${base}/disks`);
  if (has("disks/{id}/backups", "POST")) lines.push(`curl -s -X POST ${base}/disks/${diskId}/backups`);
  if (has("disks/{id}/runs", "GET")) lines.push(`curl -s ${base}/disks/${diskId}/runs`);
  if (has("disks/{id}/points", "GET")) lines.push(`curl -s ${base}/disks/${diskId}/points`);
  return lines;
}

export async function runHost(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { "lease-seconds": { type: "string" }, verbose: { type: "boolean", short: "v" } },
  });
  const log = consoleLogger(Boolean(values.verbose));
  const leaseMs = leaseOption(values["lease-seconds"]);
  // host.json and the functions are read first: a mistake in either stops before storage starts.
  const settings = readHostSettings();
  const specs = discoverFunctions(log);
  if (specs.length === 0) throw new Error("no functions found; build first (npm run build)");

  const { engine, accounts } = await openWalkthroughEngine(log, "host");
  try {
    useApp(engine);
    // In Azure, infra declares the queues; locally they are made here, poison queues included,
    // so a poison handler has a queue to listen on before the first failure.
    const names = Object.values(QUEUES).flatMap((q) => [q, poisonQueue(q)]);
    await Promise.all(names.map((q) => engine.queueClient(q).createIfNotExists()));

    let disks = await engine.lineage.listDisks();
    if (disks.length === 0) {
      log.info("no disk is registered: creating and registering the walkthrough's disk");
      await ensureWalkthroughDisk(
        { say: (line = "") => line.trim() && log.info(line.trim()) },
        engine,
        accounts,
      );
      disks = await engine.lineage.listDisks();
    }

    const host = await startHost(specs, {
      log,
      queueFor: (name) => engine.queueClient(name),
      httpPort: engine.config.httpPort,
      timerStatusFile: path.join(engine.config.home, "timers.json"),
      settings,
      queue: leaseMs ? { leaseMs } : {},
      // DISKDELTA_SCHEDULE has a default (config.ts) that the Functions host cannot know of; in
      // Azure the app setting is always set, here the default applies when it is not.
      env: { ...process.env, DISKDELTA_SCHEDULE: engine.config.schedule },
    });

    const base = `http://localhost:${host.httpPort}/api`;
    const httpSpecs = specs.filter((s): s is HttpFunctionSpec => s.kind === "http");
    log.info(`diskdelta is running (${specs.length} functions)`);
    log.info(`storage: ${accounts.where}`);
    if (host.http) {
      log.info(`HTTP API on ${base} (no function keys locally, as with func start):`);
      for (const s of httpSpecs)
        log.info(`  ${s.methods.join(",").padEnd(6)} ${base}/${s.route}  (${s.name})`);
      const examples = curlExamples(base, httpSpecs, disks[0]?.id ?? "mypremiumdisk");
      if (examples.length) {
        log.info("try:");
        for (const line of examples) log.info(`  ${line}`);
      }
    }
    for (const t of host.timer?.nextRuns() ?? [])
      log.info(`timer ${t.name}: "${t.schedule}", next at ${t.next.toISOString()}`);
    if (host.queue) {
      const q = settings.queues;
      log.info(
        `queues: ${host.queue.queues.join(", ")} (batch ${q.batchSize}, new batch at ${q.newBatchThreshold}, ` +
          `poison after ${q.maxDequeueCount} deliveries, retry after ${q.visibilityTimeoutMs / 1000} s)`,
      );
      log.info(
        "more workers, as more Functions instances would be: npx diskdelta worker (in another terminal)",
      );
    }
    log.info(
      `disks: ${disks.map((d) => d.id).join(", ")}; the CLI works alongside: npx diskdelta runs ${disks[0]?.id}`,
    );
    log.info("Ctrl+C to stop");

    await untilSignal(log);
    await host.stop();
    log.info("stopped");
  } finally {
    useApp(undefined);
    await engine.close();
  }
}

if (require.main === module) {
  runHost(process.argv.slice(2)).then(
    () => undefined,
    (err: unknown) => {
      process.stderr.write(`diskdelta host: ${errorText(err)}\n`);
      process.exitCode = exitCodeOf(err);
    },
  );
}
