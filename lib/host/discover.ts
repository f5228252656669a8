/**
 * Finds the app's functions the way the Functions host indexes a Node v4 app: by loading every
 * compiled file under functions/ (dist/functions/*.js, next to this file's compiled location) and
 * collecting the `functions: FunctionSpec[]` each exports. Guarantees: a file without specs is
 * skipped with a warning naming it; a file that fails to load stops discovery with its name (a
 * broken app must not half-start); a spec that is malformed, or whose name another spec already
 * uses, is an error naming both, since the host refuses duplicate function names.
 */
import fs from "node:fs";
import path from "node:path";
import type { FunctionSpec } from "../app/register";
import type { HostLogger } from "./invocation";

/** dist/lib/host → dist/functions (and lib/host → functions when run from the sources). */
export function functionsDir(): string {
  return path.resolve(__dirname, "../../functions");
}

function checkSpec(spec: unknown, file: string): FunctionSpec {
  const s = spec as Partial<FunctionSpec> | undefined;
  const bad = (why: string) => new Error(`${file}: a function spec ${why}`);
  if (!s || typeof s !== "object") throw bad("is not an object");
  if (typeof s.name !== "string" || !s.name) throw bad("has no name");
  if (typeof s.handler !== "function") throw bad(`${s.name} has no handler`);
  switch (s.kind) {
    case "http":
      if (typeof s.route !== "string" || !Array.isArray(s.methods) || s.methods.length === 0)
        throw bad(`${s.name} (http) needs a route and methods`);
      break;
    case "timer":
      if (typeof s.schedule !== "string") throw bad(`${s.name} (timer) needs a schedule`);
      break;
    case "queue":
      if (typeof s.queueName !== "string" || !s.queueName) throw bad(`${s.name} (queue) needs a queueName`);
      break;
    default:
      throw bad(`${s.name} has kind ${String(s.kind)}, not http, timer or queue`);
  }
  return s as FunctionSpec;
}

export function discoverFunctions(
  log: HostLogger,
  dir = functionsDir(),
  extensions = [".js"],
): FunctionSpec[] {
  if (!fs.existsSync(dir)) {
    log.warn(`no functions folder at ${dir}; build first (npm run build)`);
    return [];
  }
  const files = fs
    .readdirSync(dir)
    .filter(
      (f) => extensions.some((ext) => f.endsWith(ext)) && !f.endsWith(".d.ts") && !f.endsWith(".test.ts"),
    )
    .sort();
  const specs: FunctionSpec[] = [];
  const owner = new Map<string, string>();
  for (const file of files) {
    const full = path.join(dir, file);
    let exported: { functions?: unknown };
    try {
      // Loading the compiled functions by path is the point; CommonJS, as the Functions host loads them.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      exported = require(full) as { functions?: unknown };
    } catch (err) {
      throw new Error(`cannot load ${full}: ${(err as Error).message}`);
    }
    if (!Array.isArray(exported.functions) || exported.functions.length === 0) {
      log.warn(`${full} exports no \`functions\` specs; skipped`);
      continue;
    }
    for (const raw of exported.functions) {
      const spec = checkSpec(raw, full);
      const other = owner.get(spec.name.toLowerCase());
      if (other) throw new Error(`function ${spec.name} is defined twice: in ${other} and ${full}`);
      owner.set(spec.name.toLowerCase(), full);
      specs.push(spec);
    }
  }
  return specs;
}
