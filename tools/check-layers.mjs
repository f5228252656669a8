#!/usr/bin/env node
/**
 * The house rules, checked on every `npm run lint` (issue 10): exits 1 and names each break.
 *
 * 1. No import circle between files, nor between rooms (a room is a folder of lib/, a top-level
 *    file of lib/, or functions/). Type imports count: a circle of types is still a circle.
 * 2. The kernel and the range algebra import nothing of the project (lib/core, lib/ranges).
 * 3. Entry rooms are imported only from the rooms that may start them: the composition root
 *    (lib/compose) by the CLI, the local host and functions/; the local host by the CLI; the CLI
 *    and functions/ by nobody. Nothing in lib imports functions/.
 * 4. The Azure SDKs (storage, tables, queues, identity, ARM, Application Insights) and the
 *    emulator are imported only by the files that implement a port over them; the Functions SDK
 *    only by the Functions adapters.
 *
 * usage: node tools/check-layers.mjs [ROOT]   (default: the project root; ROOT holds lib/ and functions/)
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), ".."));

/** Rule 2. */
const ISOLATED = ["lib/core", "lib/ranges"];
/** Rule 3: room → the rooms (besides itself) allowed to import it. */
const ENTRY = {
  "lib/compose": ["lib/cli", "lib/host", "functions"],
  "lib/host": ["lib/cli"],
  "lib/cli": [],
  functions: [],
};
/** Rule 4: package patterns → the files or folders (prefixes) allowed to import them. */
const PACKAGES = [
  {
    what: "the Azure SDKs",
    match: /^(@azure\/(?!functions(-core)?$)[^/]+|applicationinsights)(\/|$)/,
    allowed: [
      "lib/azure/",
      "lib/storage/azure.ts",
      "lib/lineage/tableStore.ts",
      "lib/queues/sender.ts",
      "lib/sources/managedDisk.ts",
      "lib/telemetry/",
      "lib/compose/",
      "lib/host/",
      "lib/emulator/",
    ],
  },
  { what: "the emulator", match: /^azurite(\/|$)/, allowed: ["lib/emulator/"] },
  {
    what: "the Functions SDK",
    match: /^@azure\/functions(-core)?$/,
    allowed: ["functions/", "lib/host/", "lib/app/register.ts", "lib/compose/runtime.ts"],
  },
];

function walk(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === "node_modules" ? [] : walk(p);
    return e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") ? [p] : [];
  });
}

const rel = (p) => path.relative(root, p).split(path.sep).join("/");
const files = [...walk(path.join(root, "lib")), ...walk(path.join(root, "functions"))].map(rel).sort();
const known = new Set(files);

function roomOf(file) {
  if (file.startsWith("functions/")) return "functions";
  const parts = file.split("/");
  return parts.length > 2 ? `lib/${parts[1]}` : `lib/${parts[1].replace(/\.ts$/, "")}`;
}

/** Comments removed (strings kept), so an example in a comment is not an import. */
function code(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`\\])\/\/.*$/gm, "$1");
}

const SPEC = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)["']([^"']+)["']/gm;

function importsOf(file) {
  const text = code(fs.readFileSync(path.join(root, file), "utf8"));
  const out = [];
  for (const m of text.matchAll(SPEC)) if (m[1]) out.push(m[1]);
  return out;
}

function resolve(from, spec) {
  const base = path.posix
    .normalize(path.posix.join(path.posix.dirname(from), spec))
    .replace(/\.(js|ts)$/, "");
  for (const cand of [`${base}.ts`, `${base}/index.ts`]) if (known.has(cand)) return cand;
  return undefined;
}

const problems = [];
const fileEdges = new Map(files.map((f) => [f, new Set()]));
const roomEdges = new Map();
const roomWhy = new Map();

for (const file of files) {
  const room = roomOf(file);
  for (const spec of importsOf(file)) {
    if (spec.startsWith(".")) {
      const target = resolve(file, spec);
      if (!target) continue;
      fileEdges.get(file).add(target);
      const to = roomOf(target);
      if (to === room) continue;
      if (!roomEdges.has(room)) roomEdges.set(room, new Set());
      roomEdges.get(room).add(to);
      if (!roomWhy.has(`${room}>${to}`)) roomWhy.set(`${room}>${to}`, `${file} → ${target}`);
      if (ISOLATED.includes(room))
        problems.push(`${file} imports ${target}: ${room} imports nothing of the project (rule 2)`);
      if (to in ENTRY && !ENTRY[to].includes(room))
        problems.push(
          `${file} imports ${target}: ${to} is an entry room, imported only by ${ENTRY[to].join(", ") || "nobody"} (rule 3)`,
        );
      continue;
    }
    for (const p of PACKAGES) {
      if (p.match.test(spec) && !p.allowed.some((a) => file === a || (a.endsWith("/") && file.startsWith(a))))
        problems.push(
          `${file} imports ${spec}: ${p.what} may be imported only by ${p.allowed.join(", ")} (rule 4)`,
        );
    }
  }
}

/** Tarjan's strongly connected components, iteratively; returns those with more than one node. */
function circles(nodes, edges) {
  let next = 0;
  const index = new Map();
  const low = new Map();
  const onStack = new Set();
  const stack = [];
  const found = [];
  for (const start of nodes) {
    if (index.has(start)) continue;
    const work = [[start, [...(edges.get(start) ?? [])], 0]];
    index.set(start, next);
    low.set(start, next++);
    stack.push(start);
    onStack.add(start);
    while (work.length) {
      const frame = work[work.length - 1];
      const [v, succ] = frame;
      if (frame[2] < succ.length) {
        const w = succ[frame[2]++];
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push([w, [...(edges.get(w) ?? [])], 0]);
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(v)));
      }
      if (low.get(v) === index.get(v)) {
        const scc = [];
        let w;
        do {
          w = stack.pop();
          onStack.delete(w);
          scc.push(w);
        } while (w !== v);
        if (scc.length > 1) found.push(scc.sort());
      }
    }
  }
  return found;
}

for (const c of circles(files, fileEdges))
  problems.push(`import circle between files (rule 1): ${c.join(", ")}`);
const rooms = [...new Set(files.map(roomOf))].sort();
for (const c of circles(rooms, roomEdges)) {
  const inside = new Set(c);
  const why = [];
  for (const from of c)
    for (const to of roomEdges.get(from) ?? []) if (inside.has(to)) why.push(roomWhy.get(`${from}>${to}`));
  problems.push(`import circle between rooms (rule 1): ${c.join(", ")} (${why.join("; ")})`);
}

if (problems.length) {
  process.stderr.write(
    `check-layers: ${problems.length} break${problems.length === 1 ? "" : "s"} of the house rules\n`,
  );
  for (const p of problems) process.stderr.write(`  - ${p}\n`);
  process.exit(1);
}
process.stdout.write(
  `check-layers: ${files.length} files in ${rooms.length} rooms, no circle, layering kept\n`,
);
