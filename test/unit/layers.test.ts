/**
 * tools/check-layers.mjs, the house rules `npm run lint` enforces: run as a real process on small
 * trees made here (each rule broken once), and on this repository, which keeps them.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const script = path.join(__dirname, "..", "..", "tools", "check-layers.mjs");
const repo = path.join(__dirname, "..", "..");

function check(dir: string) {
  const r = spawnSync(process.execPath, [script, dir], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

function tree(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "layers-"));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

const CLEAN = {
  "lib/core/errors.ts": "export class E extends Error {}\n",
  "lib/ranges/index.ts": "export const W = 4;\n",
  "lib/storage/azure.ts":
    'import { BlobServiceClient } from "@azure/storage-blob";\nimport { E } from "../core/errors";\n',
  "lib/backup/run.ts":
    'import type { E } from "../core/errors";\nimport { W } from "../ranges";\n// import { x } from "../compose"; (a comment is not an import)\n',
  "lib/compose/index.ts": 'import "../backup/run";\nimport "../storage/azure";\n',
  "lib/cli/main.ts": 'import("../compose");\n',
  "functions/http.ts": 'import type { HttpRequest } from "@azure/functions";\nimport "../lib/compose";\n',
};

test("this repository keeps the house rules", () => {
  const r = check(repo);
  expect(r.out).toMatch(/no circle, layering kept/);
  expect(r.status).toBe(0);
});

test("a tree that keeps the rules passes", () => {
  const r = check(tree(CLEAN));
  expect(r.out).toMatch(/7 files in 7 rooms, no circle, layering kept/);
  expect(r.status).toBe(0);
});

test("a circle of files, and the circle of rooms it makes, fail (type imports count)", () => {
  const r = check(
    tree({
      ...CLEAN,
      "lib/app/views.ts": 'import type { Run } from "../backup/types";\nexport type View = 1;\n',
      "lib/backup/types.ts": 'import type { View } from "../app/views";\nexport type Run = 1;\n',
    }),
  );
  expect(r.status).toBe(1);
  expect(r.out).toMatch(/import circle between files \(rule 1\): lib\/app\/views.ts, lib\/backup\/types.ts/);
  expect(r.out).toMatch(/import circle between rooms \(rule 1\): lib\/app, lib\/backup/);
});

test("the kernel importing the project, lib importing an entry room, and an SDK outside its adapter fail", () => {
  const r = check(
    tree({
      ...CLEAN,
      "lib/core/retry.ts": 'import { W } from "../ranges";\n',
      "lib/backup/seal.ts": 'import { x } from "../compose";\n',
      "lib/diff/lister.ts": 'const q = require("@azure/storage-queue");\n',
      "lib/app/api.ts": 'import { app } from "@azure/functions";\n',
      "lib/restore/file.ts": 'import "azurite";\n',
    }),
  );
  expect(r.status).toBe(1);
  // The compose import also closes a circle of rooms (compose imports backup).
  expect(r.out).toMatch(/6 breaks/);
  expect(r.out).toMatch(/import circle between rooms \(rule 1\): lib\/backup, lib\/compose/);
  expect(r.out).toMatch(/lib\/core\/retry.ts imports lib\/ranges\/index.ts: .* \(rule 2\)/);
  expect(r.out).toMatch(/lib\/backup\/seal.ts imports lib\/compose\/index.ts: lib\/compose is an entry room/);
  expect(r.out).toMatch(/lib\/diff\/lister.ts imports @azure\/storage-queue: the Azure SDKs/);
  expect(r.out).toMatch(/lib\/app\/api.ts imports @azure\/functions: the Functions SDK/);
  expect(r.out).toMatch(/lib\/restore\/file.ts imports azurite: the emulator/);
});
