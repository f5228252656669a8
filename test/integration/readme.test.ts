/**
 * The README's examples run (issue 12 item 9): every fenced `sh` block of README.md, in order, as
 * `bash -euo pipefail`, from the repository's root, against the embedded storage of a fresh data
 * folder (a temporary DISKDELTA_HOME on a free DISKDELTA_EMBEDDED_PORT) and the local host (a free
 * DISKDELTA_HTTP_PORT). Every command must succeed, so a README that drifts from the code fails CI.
 *
 * Markers in the fence's info string:
 * - `sh background`: long-running processes (`npm start`, `diskdelta worker`), one per line, as in
 *   separate terminals; each is started, waited for ("Ctrl+C to stop"), kept for the blocks after
 *   it, and at the end stopped with Ctrl+C (SIGINT to its process group), which it must survive
 *   with exit code 0;
 * - `sh azure`: needs a real Azure subscription (az, azd, real accounts); skipped, by name;
 * - `sh ci`: the repository's own install, build and test commands, which CI runs itself (inside
 *   `npm test` they would recurse or reinstall node_modules under the running tests); skipped, by
 *   name.
 *
 * What the test changes before running a block, and only that: `npm start` and `npm run demo` run
 * as the compiled scripts they start (`npm test` has just built), and `localhost:7071` is the
 * test's own port. Examples must take ids from earlier output: a literal run, restore or point id
 * in any block fails the test.
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ensureBuilt, ROOT } from "../support/build";

interface Block {
  lang: string;
  markers: string[];
  code: string;
  heading: string;
  line: number;
  name: string;
}

const MARKERS = new Set(["background", "azure", "ci"]);
const SKIPPED: Record<string, string> = {
  azure: "needs a real Azure subscription",
  ci: "the repository's own install, build and test commands, run by CI itself",
};
/** How long one block may take; the longest (the walkthrough) takes a few seconds. */
const BLOCK_MS = 120_000;
const READY = "Ctrl+C to stop";

/** The fenced blocks of a Markdown text, each with the heading it sits under. */
function fencedBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split("\n");
  let heading = "(top)";
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*(.*)$/.exec(lines[i]);
    if (!open) {
      const h = /^#{1,6}\s+(.*)$/.exec(lines[i]);
      if (h) heading = h[1].trim();
      continue;
    }
    const indent = open[1].length;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) body.push(lines[j++].slice(indent));
    const code = body.join("\n");
    const first = body.find((l) => l.trim() && !l.trim().startsWith("#"))?.trim() ?? "";
    blocks.push({
      lang: open[2],
      markers: open[3].split(/\s+/).filter(Boolean),
      code,
      heading,
      line: i + 1,
      name: `${heading} (README.md:${i + 1}): ${first.length > 70 ? `${first.slice(0, 69)}…` : first}`,
    });
    i = j;
  }
  return blocks;
}

const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
const shBlocks = fencedBlocks(readme).filter((b) => b.lang === "sh");

let scratch: string;
let env: NodeJS.ProcessEnv;
let httpPort: number;
const outputs: string[] = [];
interface Started {
  child: ChildProcess;
  output: () => string;
  /** Exit code, or the signal that ended it. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}
const background: Array<Started & { line: string }> = [];

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

async function freePortBase(): Promise<number> {
  const free = (p: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(p, "127.0.0.1", () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + crypto.randomInt(40000);
    if ((await free(base)) && (await free(base + 1)) && (await free(base + 2))) return base;
  }
  throw new Error("found no three consecutive free ports");
}

/** The block as the test runs it: the two npm scripts as what they run, the API on its own port. */
function prepared(code: string): string {
  return code
    .replace(/\bnpm start\b/g, "node dist/lib/host/main.js")
    .replace(/\bnpm run demo\b/g, "node dist/lib/cli/walkthrough.js")
    .replace(/localhost:7071/g, `localhost:${httpPort}`);
}

function start(script: string): Started {
  // Its own process group, so Ctrl+C can be sent as a terminal sends it: to the whole group.
  const child = spawn("bash", ["-c", script], {
    cwd: ROOT,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => output, exit };
}

async function runBlock(block: Block): Promise<void> {
  const p = start(`set -euo pipefail\n${prepared(block.code)}`);
  const timer = setTimeout(() => process.kill(-p.child.pid!, "SIGKILL"), BLOCK_MS);
  const { code } = await p.exit;
  clearTimeout(timer);
  outputs.push(p.output());
  if (code !== 0)
    throw new Error(
      `${block.name}\nexited ${code}${code === null ? " (killed: took too long)" : ""}:\n${p.output()}`,
    );
}

async function startBackground(block: Block): Promise<void> {
  const lines = block.code.split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
  for (const line of lines) {
    const p = start(`exec ${prepared(line)}`);
    background.push({ line, ...p });
    const started = Date.now();
    while (!p.output().includes(READY)) {
      if (p.child.exitCode !== null || Date.now() - started > 60_000)
        throw new Error(`${line}: not ready (exit ${p.child.exitCode}):\n${p.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-readme-"));
  httpPort = await freePort();
  const user = path.join(scratch, "user");
  fs.mkdirSync(user);
  env = {
    PATH: process.env.PATH ?? "",
    HOME: user,
    TMPDIR: scratch,
    DISKDELTA_HOME: path.join(scratch, "data"),
    DISKDELTA_EMBEDDED_PORT: String(await freePortBase()),
    DISKDELTA_HTTP_PORT: String(httpPort),
  };
});

afterAll(async () => {
  for (const b of background) {
    try {
      process.kill(-b.child.pid!, "SIGKILL");
    } catch {
      // Stopped already.
    }
  }
  // The storage server leaves a few seconds after its last client; then the folder can go.
  const lock = path.join(env.DISKDELTA_HOME!, "server");
  const serving = () => {
    try {
      return fs.readdirSync(lock).some((f) => fs.readFileSync(path.join(lock, f), "utf8").includes('"held"'));
    } catch {
      return false;
    }
  };
  for (let waited = 0; serving() && waited < 20_000; waited += 200)
    await new Promise((resolve) => setTimeout(resolve, 200));
  fs.rmSync(scratch, { recursive: true, force: true, maxRetries: 5 });
}, 30_000);

describe("README.md", () => {
  test("every sh block is runnable or marked background, azure or ci", () => {
    const unknown = shBlocks.flatMap((b) =>
      b.markers.filter((m) => !MARKERS.has(m)).map((m) => `${b.name}: ${m}`),
    );
    expect(unknown).toEqual([]);
    expect(shBlocks.filter((b) => b.markers.length === 0).length).toBeGreaterThanOrEqual(8);
  });

  test("no example carries a literal run, restore or point id, or a time from another machine", () => {
    const literal = /\b(r|rs|p)-\d{8}T\d{9}Z-[0-9a-f]{6}\b|\b20\d\d-\d\d-\d\dT\d\d:\d\d(:\d\d)?/;
    expect(shBlocks.filter((b) => literal.test(b.code)).map((b) => b.name)).toEqual([]);
  });

  for (const block of shBlocks) {
    const skip = block.markers.find((m) => m in SKIPPED);
    if (skip) {
      test.skip(`[${skip}: ${SKIPPED[skip]}] ${block.name}`, () => undefined);
    } else if (block.markers.includes("background")) {
      test(`[background] ${block.name}`, () => startBackground(block), BLOCK_MS);
    } else {
      test(block.name, () => runBlock(block), BLOCK_MS);
    }
  }

  test("the background processes stop with Ctrl+C and exit 0; no key was printed", async () => {
    expect(background.length).toBeGreaterThan(0);
    for (const b of background) process.kill(-b.child.pid!, "SIGINT");
    for (const b of background) {
      const timer = setTimeout(() => process.kill(-b.child.pid!, "SIGKILL"), 30_000);
      const { code, signal } = await b.exit;
      clearTimeout(timer);
      outputs.push(b.output());
      // The diskdelta process exits 0 after the work under way; npx, wrapping it, passes the
      // Ctrl+C on and then ends by that signal itself, as npm does in a terminal.
      const clean = code === 0 || (signal === "SIGINT" && /^npx /.test(b.line.trim()));
      expect({ line: b.line, code, signal, clean }).toMatchObject({ line: b.line, clean: true });
      expect(b.output()).toMatch(/\] (worker )?stopped\n/);
      expect(() => process.kill(-b.child.pid!, 0)).toThrow(); // nothing of its group is left
    }
    const keys = Object.values(
      JSON.parse(fs.readFileSync(path.join(env.DISKDELTA_HOME!, "accounts.json"), "utf8")) as Record<
        string,
        string
      >,
    );
    expect(keys.length).toBeGreaterThan(0);
    for (const out of outputs)
      for (const key of keys) if (out.includes(key)) throw new Error("a key was printed");
  });
});
