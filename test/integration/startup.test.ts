/**
 * Start-up and the package as a new user meets them (issue 12 item 8), with real processes of the
 * compiled CLI and real npm: `--help`, `--version` and a bad argument load no Azure SDK, telemetry
 * or emulator module and start within 4× a bare `node -e 0`; the function files load no telemetry
 * without a connection string and no emulator; the production install carries no emulator, and a
 * command that wants the embedded storage where azurite is missing says so in one line; on a Node
 * older than 22, `npm ci` says which Node is needed in one line, before anything else of its own.
 *
 * The counting and timing are the bench's own (test/bench/startup.ts, compiled), so the figures
 * in the README and these checks measure the same thing.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureBuilt, HOST, MAIN, ROOT, WALKTHROUGH } from "../support/build";
import type * as Startup from "../bench/startup";

let startup: typeof Startup;
let scratch: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  ensureBuilt();
  // The compiled module: its counting preload is loaded with `node -r`, which needs JavaScript.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  startup = require(path.join(ROOT, "dist/test/bench/startup.js")) as typeof Startup;
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-startup-"));
  env = {
    PATH: process.env.PATH ?? "",
    HOME: scratch,
    DISKDELTA_HOME: path.join(scratch, "home"),
    DISKDELTA_EMBEDDED_PORT: String(await startup.freePortBase()),
  };
});

afterAll(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

const HEAVY = (packages: string[]) =>
  packages.filter((p) => /^@azure|^@azure-rest|^applicationinsights$|^azurite$/.test(p));

describe("--help, --version and a bad argument", () => {
  test.each([
    [["--help"], 0],
    [["--version"], 0],
    [["disk", "add", "--help"], 0],
    [["restore", "--help"], 0],
    [["--no-such-option"], 2],
    [["backup"], 2],
    [["disk", "set", "d1", "--keep-last"], 2],
  ])("diskdelta %j loads no Azure SDK, telemetry or emulator (exit %i)", async (args, code) => {
    const m = await startup.modulesOf([startup.BIN, ...args], env);
    expect({ code: m.code, heavy: HEAVY(m.packages) }).toEqual({ code, heavy: [] });
    expect(m.heavy).toBe(0);
    // commander and the project's own few files: tens of modules, not hundreds.
    expect(m.modules).toBeLessThan(60);
  });

  test("--help starts within 4× a bare node -e 0 (medians of 7, interleaved)", async () => {
    const [bare, help] = await startup.medians(
      [
        ["-e", "0"],
        [startup.BIN, "--help"],
      ],
      7,
      env,
    );
    console.log(`node -e 0 ${bare.toFixed(0)} ms, diskdelta --help ${help.toFixed(0)} ms`);
    expect(help).toBeLessThanOrEqual(4 * bare);
  });
});

test("the four function files load no telemetry without a connection string, and no emulator", async () => {
  const m = await startup.modulesOf(startup.importerArgs(), env);
  expect(m.code).toBe(0);
  expect(m.packages).toContain("@azure/functions");
  expect(m.packages).not.toContain("applicationinsights");
  expect(m.packages).not.toContain("azurite");
});

describe("the production install", () => {
  test("carries no emulator: azurite and what only it needs are dev dependencies", () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    expect(Object.keys(pkg.dependencies)).not.toContain("azurite");
    expect(Object.keys(pkg.devDependencies)).toContain("azurite");
    // What npm ci --omit=dev leaves out is what the lockfile marks dev.
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { dev?: boolean }>;
    };
    for (const name of ["azurite", "sequelize", "mysql2", "tedious", "lokijs"]) {
      const entries = Object.entries(lock.packages).filter(([p]) => p.endsWith(`node_modules/${name}`));
      expect(entries.length).toBeGreaterThan(0);
      for (const [where, entry] of entries) expect([where, entry.dev]).toEqual([where, true]);
    }
  });

  test("only lib/emulator names the azurite package, beyond asking whether it is installed", () => {
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        const rel = path.relative(ROOT, full);
        if (entry.isDirectory()) {
          if (rel !== path.join("lib", "emulator")) walk(full);
        } else if (entry.name.endsWith(".ts")) {
          // Asking whether it is installed (require.resolve) is the one use allowed outside.
          const text = fs.readFileSync(full, "utf8").replace(/require\.resolve\(["']azurite[^)]*\)/g, "");
          if (/["']azurite(\/[^"']*)?["']/.test(text)) offenders.push(rel);
        }
      }
    };
    walk(path.join(ROOT, "lib"));
    walk(path.join(ROOT, "functions"));
    expect(offenders).toEqual([]);
  });

  test("a command that wants the embedded storage where azurite is missing says so in one line", () => {
    // Resolving azurite fails in these processes, as in an install made with --omit=dev.
    const hide = path.join(scratch, "no-azurite.js");
    fs.writeFileSync(
      hide,
      `const Module = require("node:module");
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === "azurite" || request.startsWith("azurite/")) {
    throw Object.assign(new Error("Cannot find module '" + request + "'"), { code: "MODULE_NOT_FOUND" });
  }
  return resolve.call(this, request, ...rest);
};
`,
    );
    const home = path.join(scratch, "no-azurite-home");
    const run = (script: string, args: string[], extra: NodeJS.ProcessEnv = {}) => {
      const started = Date.now();
      const r = spawnSync(process.execPath, ["-r", hide, script, ...args], {
        cwd: scratch,
        env: { ...env, DISKDELTA_HOME: home, ...extra },
        encoding: "utf8",
        timeout: 30_000,
      });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - started };
    };
    const port = String(40000 + Math.floor(Math.random() * 20000));
    for (const [what, r] of [
      ["disk list", run(MAIN, ["disk", "list"])],
      ["backup", run(MAIN, ["backup", "d1", "--json"])],
      ["the walkthrough", run(WALKTHROUGH, [])],
      ["the local host", run(HOST, [], { DISKDELTA_HTTP_PORT: port })],
    ] as const) {
      // A static import of azurite anywhere on the way would have crashed with MODULE_NOT_FOUND.
      const lines = r.stderr.trim().split("\n");
      expect({ what, code: r.code, lines: lines.length }).toEqual({ what, code: 2, lines: 1 });
      expect(lines[0]).toMatch(/the embedded storage \(Azurite\) is not installed/);
      expect(lines[0]).toMatch(/AzureWebJobsStorage/);
      expect(lines[0]).toMatch(/npm ci/);
      expect(r.ms).toBeLessThan(10_000);
    }
    // Nothing was started or made: no data folder, no storage server.
    expect(fs.existsSync(home)).toBe(false);
  });
});

describe("npm on a Node older than 22", () => {
  const pkg = () =>
    JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
      engines: { node: string };
    };

  test("the preinstall script prints one line naming the Node needed, and nothing on Node 22", () => {
    const script = pkg().scripts.preinstall;
    expect(pkg().engines.node).toBe(">=22");
    const run = (agent: string) =>
      spawnSync("sh", ["-c", script], {
        cwd: scratch,
        env: { ...env, npm_config_user_agent: agent },
        encoding: "utf8",
      });
    const old = run("npm/11.19.1 node/v20.20.2 linux x64 workspaces/false");
    expect(old.status).toBe(0);
    expect(old.stdout).toBe("");
    expect(old.stderr.trim().split("\n")).toHaveLength(1);
    expect(old.stderr).toMatch(/diskdelta needs Node 22 or later, and npm runs on Node v20\.20\.2/);
    for (const agent of [
      "npm/11.19.1 node/v22.23.3 linux x64 workspaces/false",
      "npm/11.6.0 node/v24.1.0 darwin arm64 workspaces/false",
    ]) {
      const r = run(agent);
      expect([agent, r.status, r.stdout, r.stderr]).toEqual([agent, 0, "", ""]);
    }
  });

  test("npm ci (dry run, offline, on the machine's own npm and Node): no EBADENGINE, and on Node < 22 the one line first", () => {
    // The machine's npm and Node, not the node@22 dev dependency that npm test put first on PATH.
    const PATH = (process.env.PATH ?? "")
      .split(path.delimiter)
      .filter((p) => !p.includes(`node_modules${path.sep}.bin`))
      .join(path.delimiter);
    const systemNode = spawnSync("node", ["-p", "process.versions.node"], {
      env: { PATH },
      encoding: "utf8",
    });
    expect(systemNode.status).toBe(0);
    const major = Number(systemNode.stdout.trim().split(".")[0]);
    const copy = fs.mkdtempSync(path.join(scratch, "npm-"));
    for (const f of ["package.json", "package-lock.json", ".npmrc"])
      fs.copyFileSync(path.join(ROOT, f), path.join(copy, f));
    // Merged as a terminal shows them; npm's own banner for the script ("> diskdelta@… preinstall",
    // "> node -e …") is the only thing before the line.
    const r = spawnSync(
      "sh",
      ["-c", "npm ci --dry-run --offline --no-audit --no-fund --cache ./cache 2>&1"],
      { cwd: copy, env: { PATH, HOME: scratch }, encoding: "utf8" },
    );
    expect(r.status).toBe(0);
    const all = r.stdout;
    expect(all).not.toMatch(/EBADENGINE/);
    const lines = r.stdout.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("> "));
    console.log(
      `machine's Node ${systemNode.stdout.trim()}; npm ci's first lines: ${lines.slice(0, 2).join(" | ")}`,
    );
    if (major < 22) {
      expect(lines[0]).toMatch(/^diskdelta needs Node 22 or later, and npm runs on Node v\d+/);
      expect(lines.filter((l) => /Node 22/.test(l))).toHaveLength(1);
    } else {
      expect(all).not.toMatch(/diskdelta needs Node/);
    }
  });
});
