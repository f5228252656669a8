/**
 * Start-up figures (issue 12 item 8), part of `npm run bench` and runnable alone
 * (`node dist/test/bench/startup.js`): how long a diskdelta process takes before it can answer,
 * next to a bare `node -e 0` on the same machine.
 *
 * - `--help`, `--version` and a bad argument: wall time (median of BENCH_STARTUP_RUNS runs,
 *   interleaved with `node -e 0` so both see the same load), and the modules each loads, of which
 *   how many belong to an Azure SDK, applicationinsights or azurite (the target is none);
 * - `disk list` on the embedded storage, in a data folder of its own: the first command (it starts
 *   the storage server) and then with the server warm;
 * - importing the four function files, as the Functions host does when an instance starts.
 *
 * Modules are counted by a preload (this file, `-r`, with BENCH_STARTUP_COUNT set) that wraps
 * Module._load and prints the count to stderr at exit; timed runs go without it.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import Module from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const ROOT = path.resolve(__dirname, "../../..");
export const BIN = path.join(ROOT, "bin/diskdelta.js");
export const FUNCTIONS = ["http", "queues", "restoreQueue", "timer"].map((f) =>
  path.join(ROOT, "dist/functions", `${f}.js`),
);
const COUNT_MARK = "bench-startup-modules ";
/** Packages that must not load to print help: the SDKs, telemetry, the emulator. */
const HEAVY = /[\\/]node_modules[\\/](@azure[\\/]|@azure-rest[\\/]|applicationinsights[\\/]|azurite[\\/])/;

// Loaded with -r to count modules: report at exit and stay out of the way otherwise.
if (process.env.BENCH_STARTUP_COUNT && require.main !== module) {
  const seen = new Set<string>();
  const mod = Module as unknown as {
    _load: (request: string, parent: unknown, isMain: boolean) => unknown;
    _resolveFilename: (request: string, parent: unknown, isMain: boolean) => string;
  };
  const load = mod._load;
  mod._load = function (request: string, parent: unknown, isMain: boolean) {
    const loaded = load.call(this, request, parent, isMain);
    try {
      seen.add(mod._resolveFilename(request, parent, isMain));
    } catch {
      // A builtin or a virtual module: counted by its name.
      seen.add(request);
    }
    return loaded;
  };
  process.on("exit", () => {
    const heavy = [...seen].filter((f) => HEAVY.test(f)).length;
    const packages = [
      ...new Set(
        [...seen].flatMap((f) => {
          const m = /.*[\\/]node_modules[\\/]((@[^\\/]+[\\/])?[^\\/]+)/.exec(f);
          return m ? [m[1].replace(/\\/g, "/")] : [];
        }),
      ),
    ].sort();
    process.stderr.write(`\n${COUNT_MARK}${JSON.stringify({ modules: seen.size, heavy, packages })}\n`);
  });
}

export interface Timed {
  code: number | null;
  ms: number;
  stdout: string;
  stderr: string;
}

export function runNode(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, ms: performance.now() - started, stdout, stderr }));
  });
}

export interface Modules {
  modules: number;
  /** Of those, files of an Azure SDK, applicationinsights or azurite. */
  heavy: number;
  /** The packages they come from (node_modules/<name>, scoped names whole). */
  packages?: string[];
}

/** The modules a `node <args>` process loads. */
export async function modulesOf(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Required<Modules> & { code: number | null }> {
  const r = await runNode(["-r", __filename, ...args], { ...env, BENCH_STARTUP_COUNT: "1" });
  const line = r.stderr.split("\n").find((l) => l.startsWith(COUNT_MARK));
  if (!line) throw new Error(`no module count from node ${args.join(" ")}: ${r.stderr}`);
  return { ...(JSON.parse(line.slice(COUNT_MARK.length)) as Required<Modules>), code: r.code };
}

/** Only the counts, for the figures (the package lists are for tests). */
async function countsOf(args: string[], env: NodeJS.ProcessEnv): Promise<Modules> {
  const { modules, heavy } = await modulesOf(args, env);
  return { modules, heavy };
}

export const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** Median wall times of each command, runs interleaved (a b c a b c …) so load hits all alike. */
export async function medians(commands: string[][], runs: number, env?: NodeJS.ProcessEnv) {
  const times = commands.map(() => [] as number[]);
  for (let i = 0; i < runs; i++)
    for (const [k, args] of commands.entries()) {
      const r = await runNode(args, env);
      times[k].push(r.ms);
    }
  return times.map(median);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** Three consecutive free ports for the embedded storage (blob, queue, table). */
export async function freePortBase(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = await freePort();
    if (base > 65533) continue;
    if ((await free(base + 1)) && (await free(base + 2))) return base;
  }
  throw new Error("found no three consecutive free ports");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `node -e` arguments that require the four function files and print how long that took, ms. */
export function importerArgs(): string[] {
  return [
    "-e",
    `const t = performance.now(); for (const f of ${JSON.stringify(FUNCTIONS)}) require(f); ` +
      `process.stdout.write(String(performance.now() - t));`,
  ];
}

export interface StartupFigures {
  node: { ms: number };
  help: { ms: number; ratio: number } & Modules;
  version: { ms: number } & Modules;
  badArgument: { ms: number } & Modules;
  diskList: { coldMs: number; warmMs: number } & Modules;
  functions: { importMs: number; processMs: number } & Modules;
  runs: number;
}

/** Environment of the measured commands: this one without storage settings, and a data folder of their own. */
function commandEnv(home: string, port: number): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !k.startsWith("AzureWebJobsStorage") && !k.startsWith("APPLICATIONINSIGHTS_"),
    ),
  );
  return { ...env, DISKDELTA_HOME: home, DISKDELTA_EMBEDDED_PORT: String(port) };
}

/** The figures, or undefined when BENCH_STARTUP_RUNS is 0 (skipped). */
export async function measureStartup(
  runs = Number(process.env.BENCH_STARTUP_RUNS ?? 10),
): Promise<StartupFigures | undefined> {
  if (!(runs > 0)) return undefined;
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-bench-startup-"));
  const env = commandEnv(home, await freePortBase());
  try {
    const help = [BIN, "--help"];
    const version = [BIN, "--version"];
    const bad = [BIN, "--no-such-option"];
    const [nodeMs, helpMs, versionMs, badMs] = await medians([["-e", "0"], help, version, bad], runs, env);
    const list = [BIN, "disk", "list"];
    const cold = await runNode(list, env);
    if (cold.code !== 0) throw new Error(`disk list failed: ${cold.stderr}`);
    const [warmMs] = await medians([list], Math.max(3, Math.ceil(runs / 2)), env);
    const listModules = await countsOf(list, env);

    const importer = importerArgs();
    const imports: number[] = [];
    const processes: number[] = [];
    for (let i = 0; i < Math.max(3, Math.ceil(runs / 2)); i++) {
      const r = await runNode(importer, env);
      if (r.code !== 0) throw new Error(`importing the function files failed: ${r.stderr}`);
      imports.push(Number(r.stdout));
      processes.push(r.ms);
    }

    const info = await runNode([BIN, "info", "--json"], env);
    const server = (JSON.parse(info.stdout) as { embeddedServer?: { pid: number } }).embeddedServer;
    const figures: StartupFigures = {
      node: { ms: nodeMs },
      help: { ms: helpMs, ratio: helpMs / nodeMs, ...(await countsOf(help, env)) },
      version: { ms: versionMs, ...(await countsOf(version, env)) },
      badArgument: { ms: badMs, ...(await countsOf(bad, env)) },
      diskList: { coldMs: cold.ms, warmMs, ...listModules },
      functions: {
        importMs: median(imports),
        processMs: median(processes),
        ...(await countsOf(importer, env)),
      },
      runs,
    };
    // The storage server leaves a few seconds after its last client; let it, then clean up.
    for (let waited = 0; server && pidAlive(server.pid) && waited < 15_000; waited += 100) await sleep(100);
    return figures;
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
}

/** Rows for the bench's table: metric, value, note. */
export function startupRows(f: StartupFigures): Array<[string, string, string]> {
  const ms = (n: number) => `${n.toFixed(0)} ms`;
  const mods = (m: Modules) => `${m.modules} modules, ${m.heavy} of Azure SDKs/telemetry/emulator`;
  return [
    ["node -e 0", ms(f.node.ms), `median of ${f.runs}, interleaved with the three below`],
    [
      "diskdelta --help",
      ms(f.help.ms),
      `${f.help.ratio.toFixed(1)}× node -e 0 (target ≤ 4×); ${mods(f.help)}`,
    ],
    ["diskdelta --version", ms(f.version.ms), mods(f.version)],
    ["diskdelta (bad argument)", ms(f.badArgument.ms), `exit 2; ${mods(f.badArgument)}`],
    ["disk list, embedded, cold", ms(f.diskList.coldMs), "the first command: starts the storage server"],
    ["disk list, embedded, warm", ms(f.diskList.warmMs), mods(f.diskList)],
    [
      "import the 4 function files",
      ms(f.functions.importMs),
      `require() time; whole process ${ms(f.functions.processMs)}; ${mods(f.functions)}`,
    ],
  ];
}

if (require.main === module) {
  measureStartup(Math.max(1, Number(process.env.BENCH_STARTUP_RUNS ?? 10))).then(
    (f) => {
      if (!f) return;
      const rows = startupRows(f);
      const w0 = Math.max(...rows.map((r) => r[0].length));
      const w1 = Math.max(...rows.map((r) => r[1].length));
      process.stdout.write(`— start-up (node ${process.version})\n`);
      for (const [a, b, c] of rows) process.stdout.write(`  ${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}\n`);
      process.stdout.write(`\n${JSON.stringify(f)}\n`);
    },
    (err: unknown) => {
      process.stderr.write(`startup bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
