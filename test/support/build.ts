/**
 * Tests that run real processes run the compiled CLI in dist/. `npm test` builds first; this
 * rebuilds when dist is missing or older than a source file, so a lone `npx jest` stays honest.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const root = path.resolve(__dirname, "../..");

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

export function ensureBuilt(): string {
  const main = path.join(root, "dist/lib/cli/main.js");
  const built = fs.existsSync(main) ? fs.statSync(main).mtimeMs : 0;
  if (built < Math.max(newestSource(path.join(root, "lib")), newestSource(path.join(root, "test")))) {
    execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", root], {
      cwd: root,
      stdio: "inherit",
    });
  }
  return main;
}

export const projectRoot = root;
