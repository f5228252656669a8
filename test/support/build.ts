/**
 * Tests that run real processes run the compiled CLI in dist/. `npm test` builds first; a direct
 * `npx jest` may find dist/ missing or older than lib/, so build then. tsc emits even when some
 * file fails to type-check (type errors are `npm run lint`'s business): what matters here is that
 * the scripts the tests spawn were emitted afresh.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export const ROOT = path.resolve(__dirname, "../..");
export const MAIN = path.join(ROOT, "dist/lib/cli/main.js");
export const WALKTHROUGH = path.join(ROOT, "dist/lib/cli/walkthrough.js");
export const HOST = path.join(ROOT, "dist/lib/host/main.js");

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(full));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, fs.statSync(full).mtimeMs);
  }
  return newest;
}

/** Builds when needed; returns the path of the compiled CLI. */
export function ensureBuilt(): string {
  const outputs = [MAIN, WALKTHROUGH, HOST];
  const oldestOutput = () => Math.min(...outputs.map((f) => (fs.existsSync(f) ? fs.statSync(f).mtimeMs : 0)));
  const newestSource = Math.max(
    newestMtime(path.join(ROOT, "lib")),
    newestMtime(path.join(ROOT, "functions")),
  );
  if (oldestOutput() >= newestSource) return MAIN;
  const started = Date.now();
  try {
    execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", ROOT], {
      cwd: ROOT,
      stdio: "pipe",
    });
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    const report = `${e.stdout?.toString() ?? ""}${e.stderr?.toString() ?? ""}`;
    // Allow a second of file-system timestamp granularity.
    if (oldestOutput() < started - 1000) throw new Error(`the build emitted nothing:\n${report}`);
    console.warn(`the build reported errors (the CLI was emitted anyway):\n${report}`);
  }
  return MAIN;
}
