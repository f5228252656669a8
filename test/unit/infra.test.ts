/**
 * Offline checks of the deployment templates. The ARM JSON (infra/azuredeploy.json) is parsed
 * fully. There is no Bicep CLI here, so infra/main.bicep gets a light structural parse: params,
 * resources, modules, outputs, app settings and role ids are read with regular expressions (one
 * declaration per line, as the file is written), which is enough to prove the two templates declare
 * the same things. What they compute (variables, the registration bodies, who gets which role on
 * which scope) is evaluated: a small interpreter below runs the expressions of both templates for
 * several parameter sets. Queries are compared with the files they are loaded from.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { QUEUES, poisonQueue } from "../../lib/queues/messages";
import { DEFAULT_POLICY } from "../../lib/retention/policy";
import { intervalOf } from "../../lib/config/schedule";
import {
  COPY_RATE_METRIC,
  COPY_RATE_PROPERTIES,
  DISK_STATUS_EVENT,
  DISK_STATUS_MEASUREMENTS,
  DISK_STATUS_PROPERTIES,
  RUN_EVENT,
  RUN_EVENT_MEASUREMENTS,
  RUN_EVENT_PROPERTIES,
  RUN_FAILED_EVENT,
  RUN_FAILED_PROPERTIES,
  TIMER_TICK_EVENT,
  TIMER_TICK_MEASUREMENTS,
  TIMER_TICK_PROPERTIES,
} from "../../lib/telemetry";

const INFRA = path.resolve(__dirname, "../../infra");
const read = (f: string) => fs.readFileSync(path.join(INFRA, f), "utf8");

/**
 * Built-in role ids as documented in "Azure built-in roles"
 * (learn.microsoft.com/azure/role-based-access-control/built-in-roles: the Storage and Monitor pages,
 * and for the disk roles learn.microsoft.com/azure/role-based-access-control/built-in-roles/compute).
 */
const DOCUMENTED_ROLES: Record<string, string> = {
  "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
  "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
  "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
  "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
  "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
  // Microsoft.Compute/disks/read and disks/beginGetAccess/action.
  "3e5e47e6-65f7-47ef-90b5-e5dd4d455f24": "Disk Backup Reader",
  // Microsoft.Compute/snapshots/read, write, delete, beginGetAccess/action, endGetAccess/action (and more).
  "7efff54f-a5b4-42b5-a1c5-5411624893ce": "Disk Snapshot Contributor",
  // Microsoft.Compute/disks/read and disks/write.
  "b50d9833-a0cb-478e-945f-707fcc997c13": "Disk Restore Operator",
};
const DISK_ROLES = ["Disk Backup Reader", "Disk Snapshot Contributor", "Disk Restore Operator"];

interface ArmResource {
  type: string;
  name: string;
  condition?: string;
  properties?: Record<string, unknown> & { template?: ArmTemplate };
  [key: string]: unknown;
}
interface ArmTemplate {
  parameters: Record<string, { type: string; defaultValue?: unknown }>;
  variables?: Record<string, unknown>;
  resources: ArmResource[];
  outputs?: Record<string, { type: string; value: unknown }>;
}

const arm = JSON.parse(read("azuredeploy.json")) as ArmTemplate;
const bicep = read("main.bicep");
const armText = JSON.stringify(arm);
const ENGINE = fs.readFileSync(path.resolve(__dirname, "../../lib/lineage/tableStore.ts"), "utf8");
/** Every alert query file, by name without `.kql`: new files are checked like the others. */
const ALERT_QUERIES: Record<string, string> = Object.fromEntries(
  fs
    .readdirSync(path.join(INFRA, "queries"))
    .filter((f) => f.endsWith(".kql"))
    .map((f) => [f.replace(/\.kql$/, ""), read(`queries/${f}`)]),
);
/**
 * The window sizes (minutes) a scheduledQueryRules windowSize accepts: the API answers any other
 * value with "Supported granularities are: 5, 10, 15, 30, 45, 60, 120, 180, 240, 300, 360, 1440,
 * 2880" (Azure/azure-rest-api-specs#21258); two days is the longest a log search alert looks back
 * (learn.microsoft.com, "Create or edit a log search alert rule").
 */
const WINDOW_MINUTES = [5, 10, 15, 30, 45, 60, 120, 180, 240, 300, 360, 1440, 2880];
const ISO_MINUTES: Record<string, number> = { M: 1, H: 60, D: 1440 };
function isoMinutes(iso: string): number {
  const m = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$/.exec(iso);
  if (!m) throw new Error(`not a duration: ${iso}`);
  return Number(m[1] ?? 0) * ISO_MINUTES.D + Number(m[2] ?? 0) * ISO_MINUTES.H + Number(m[3] ?? 0);
}

/** The template without its nested deployments' inner templates (they have their own scope). */
function outerOnly(t: ArmTemplate): ArmTemplate {
  return {
    ...t,
    resources: t.resources.map((r) =>
      r.properties?.template ? { ...r, properties: { ...r.properties, template: undefined } } : r,
    ),
  };
}

function allResources(t: ArmTemplate): ArmResource[] {
  return t.resources.flatMap((r) => [
    r,
    ...(r.properties?.template ? allResources(r.properties.template) : []),
  ]);
}

/** Every string anywhere in a JSON value. */
function strings(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(strings);
  if (value && typeof value === "object")
    return Object.entries(value).flatMap(([k, v]) => [k, ...strings(v)]);
  return [];
}

function bicepDecls(text: string) {
  const params = [...text.matchAll(/^param (\w+) (\w+)(?: = (.+))?$/gm)].map((m) => ({
    name: m[1],
    type: m[2],
    default: m[3],
  }));
  const resources = [...text.matchAll(/^resource (\w+) '([^@']+)@([^']+)'( existing)?/gm)].map((m) => ({
    symbol: m[1],
    type: m[2],
    existing: Boolean(m[4]),
  }));
  const modules = [...text.matchAll(/^module (\w+) '([^']+)'/gm)].map((m) => ({ symbol: m[1], path: m[2] }));
  const outputs = [...text.matchAll(/^output (\w+) (\w+)/gm)].map((m) => m[1]);
  return { params, resources, modules, outputs };
}

function armAppSettings(): string[] {
  const site = arm.resources.find((r) => r.type === "Microsoft.Web/sites");
  const settings = (site?.properties?.siteConfig as { appSettings: { name: string }[] }).appSettings;
  return settings.map((s) => s.name);
}

function bicepAppSettings(): string[] {
  const block = /appSettings: \[([\s\S]*?)\n\s*\]/.exec(bicep)?.[1] ?? "";
  return [...block.matchAll(/\{ name: '([^']+)'/g)].map((m) => m[1]);
}

const GUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

// ---- The templates' expressions, evaluated offline ----
//
// No Bicep CLI and no ARM here, so the expressions that decide who gets which role where and what is
// registered are evaluated in the test: main.bicep's params, vars, outputs and module loops, and
// azuredeploy.json's parameters, variables, outputs and nested deployments, are parsed into one small
// tree and run by one function library, written after the ARM template function reference for the
// functions these templates use (startsWith is case-insensitive, contains() finds object keys
// case-insensitively, if() evaluates one branch, union() dedupes arrays and merges objects, nested objects too). An
// unknown function, a missing property or an index out of range throws, as the deployment would
// fail. uniqueString and guid are stand-ins (a hash, not ARM's): only equality between the two
// templates matters. Resources are opaque markers: what is compared is what the expressions compute.

type Value = unknown;
type Node =
  | { k: "lit"; v: Value }
  | { k: "id"; name: string }
  | { k: "call"; fn: string; args: Node[] }
  | { k: "prop"; obj: Node; name: string }
  | { k: "index"; obj: Node; idx: Node }
  | { k: "lambda"; params: string[]; body: Node }
  | { k: "obj"; entries: [string, Node][] }
  | { k: "arr"; items: Node[] }
  | { k: "for"; name: string; src: Node; body: Node }
  | { k: "interp"; parts: (string | Node)[] }
  | { k: "op"; op: string; args: Node[] };

/** A resource or module symbol (Bicep) or a reference() (ARM): opaque, carried as its path. */
interface Marker {
  $marker: string;
}
interface Closure {
  $lambda: { params: string[]; body: Node; env: Env };
}
const isMarker = (v: Value): v is Marker => typeof v === "object" && v !== null && "$marker" in v;
const isClosure = (v: Value): v is Closure => typeof v === "object" && v !== null && "$lambda" in v;

/** Recursive-descent parser of the Bicep expression syntax main.bicep uses. */
class BicepParser {
  /** Inside ( ) a newline is white space; inside [ ], { } and at the top it ends an item. */
  private readonly newlineIsSpace: boolean[] = [false];
  constructor(
    private readonly s: string,
    public i: number,
  ) {}

  private fail(what: string): never {
    throw new Error(`bicep: ${what} at ${JSON.stringify(this.s.slice(this.i, this.i + 50))}`);
  }
  ws(): void {
    const nl = this.newlineIsSpace[this.newlineIsSpace.length - 1];
    for (;;) {
      const c = this.s[this.i];
      if (c === " " || c === "\t" || c === "\r" || (nl && c === "\n")) this.i++;
      else if (this.s.startsWith("//", this.i))
        while (this.i < this.s.length && this.s[this.i] !== "\n") this.i++;
      else return;
    }
  }
  /** Separators between array items and object entries: newlines and commas. */
  private sep(): void {
    for (;;) {
      this.ws();
      if (this.s[this.i] === "\n" || this.s[this.i] === ",") this.i++;
      else return;
    }
  }
  private at(t: string): boolean {
    this.ws();
    return this.s.startsWith(t, this.i);
  }
  atWord(w: string): boolean {
    return this.at(w) && !/\w/.test(this.s[this.i + w.length] ?? "");
  }
  eat(t: string): void {
    if (!this.at(t)) this.fail(`expected ${t}`);
    this.i += t.length;
  }
  private within<T>(newlineIsSpace: boolean, f: () => T): T {
    this.newlineIsSpace.push(newlineIsSpace);
    try {
      return f();
    } finally {
      this.newlineIsSpace.pop();
    }
  }
  ident(): string {
    this.ws();
    const m = /^[A-Za-z_]\w*/.exec(this.s.slice(this.i));
    if (!m) this.fail("expected a name");
    this.i += m[0].length;
    return m[0];
  }

  expr(): Node {
    const c = this.binary(0);
    if (this.at("?") && !this.at("??")) {
      this.i++;
      const a = this.expr();
      this.eat(":");
      return { k: "op", op: "?:", args: [c, a, this.expr()] };
    }
    return c;
  }
  private static readonly LEVELS = [
    ["??"],
    ["||"],
    ["&&"],
    ["==", "!="],
    ["<=", ">=", "<", ">"],
    ["+", "-"],
    ["*", "/", "%"],
  ];
  private binary(level: number): Node {
    if (level === BicepParser.LEVELS.length) return this.unary();
    let a = this.binary(level + 1);
    for (;;) {
      this.ws();
      const op = BicepParser.LEVELS[level].find(
        (o) => this.s.startsWith(o, this.i) && !this.s.startsWith("=>", this.i),
      );
      if (!op) return a;
      this.i += op.length;
      a = { k: "op", op, args: [a, this.binary(level + 1)] };
    }
  }
  private unary(): Node {
    if (this.at("!")) {
      this.i++;
      return { k: "op", op: "!", args: [this.unary()] };
    }
    if (this.at("-")) {
      this.i++;
      return { k: "op", op: "neg", args: [this.unary()] };
    }
    return this.postfix(this.primary());
  }
  private postfix(n: Node): Node {
    for (;;) {
      if (this.at(".")) {
        this.i++;
        n = { k: "prop", obj: n, name: this.ident() };
      } else if (this.at("[")) {
        this.i++;
        const idx = this.within(true, () => {
          const e = this.expr();
          this.eat("]");
          return e;
        });
        n = { k: "index", obj: n, idx };
      } else return n;
    }
  }
  private primary(): Node {
    this.ws();
    const c = this.s[this.i];
    if (c === "'") return this.string();
    if (/\d/.test(c ?? "")) {
      const m = /^\d+/.exec(this.s.slice(this.i))!;
      this.i += m[0].length;
      return { k: "lit", v: Number(m[0]) };
    }
    if (c === "(") {
      this.i++;
      return this.within(true, () => {
        const e = this.expr();
        this.eat(")");
        return e;
      });
    }
    if (c === "[") {
      this.i++;
      return this.within(false, () => {
        this.sep();
        if (this.atWord("for")) {
          this.i += 3;
          const name = this.ident();
          if (!this.atWord("in")) this.fail("expected in");
          this.i += 2;
          const src = this.expr();
          this.eat(":");
          const body = this.expr();
          this.sep();
          this.eat("]");
          return { k: "for", name, src, body } as Node;
        }
        const items: Node[] = [];
        while (!this.at("]")) {
          items.push(this.expr());
          this.sep();
        }
        this.eat("]");
        return { k: "arr", items } as Node;
      });
    }
    if (c === "{") {
      this.i++;
      return this.within(false, () => {
        const entries: [string, Node][] = [];
        this.sep();
        while (!this.at("}")) {
          const key = this.s[this.i] === "'" ? this.string() : { k: "lit" as const, v: this.ident() };
          if (key.k !== "lit") this.fail("an interpolated key");
          this.eat(":");
          entries.push([String(key.v), this.expr()]);
          this.sep();
        }
        this.eat("}");
        return { k: "obj", entries } as Node;
      });
    }
    const name = this.ident();
    if (name === "true" || name === "false") return { k: "lit", v: name === "true" };
    if (name === "null") return { k: "lit", v: null };
    if (this.at("=>")) {
      this.i += 2;
      return { k: "lambda", params: [name], body: this.expr() };
    }
    if (this.s[this.i] === "(") {
      this.i++;
      return this.within(true, () => {
        const args: Node[] = [];
        while (!this.at(")")) {
          args.push(this.expr());
          if (this.at(",")) this.i++;
        }
        this.eat(")");
        return { k: "call", fn: name, args } as Node;
      });
    }
    return { k: "id", name };
  }
  private string(): Node {
    this.i++;
    const parts: (string | Node)[] = [];
    let cur = "";
    const escapes: Record<string, string> = { n: "\n", r: "\r", t: "\t", "\\": "\\", "'": "'", $: "$" };
    for (;;) {
      const c = this.s[this.i];
      if (c === undefined) this.fail("unterminated string");
      if (c === "'") {
        this.i++;
        break;
      }
      if (c === "\\") {
        cur += escapes[this.s[this.i + 1]] ?? this.fail("unknown escape");
        this.i += 2;
      } else if (c === "$" && this.s[this.i + 1] === "{") {
        parts.push(cur);
        cur = "";
        this.i += 2;
        parts.push(
          this.within(true, () => {
            const e = this.expr();
            this.eat("}");
            return e;
          }),
        );
      } else {
        cur += c;
        this.i++;
      }
    }
    parts.push(cur);
    return parts.length === 1 ? { k: "lit", v: parts[0] } : { k: "interp", parts };
  }
}

/** Parser of one ARM template expression (the text between the outer brackets of "[...]"). */
function parseArmExpression(src: string): Node {
  let i = 0;
  const fail = (what: string): never => {
    throw new Error(`arm: ${what} at ${JSON.stringify(src.slice(i, i + 50))} in ${src}`);
  };
  const ws = () => {
    while (src[i] === " ") i++;
  };
  const ident = () => {
    const m = /^[A-Za-z_]\w*/.exec(src.slice(i)) ?? fail("expected a name");
    i += m[0].length;
    return m[0];
  };
  const expr = (): Node => {
    ws();
    let n: Node;
    if (src[i] === "'") {
      let v = "";
      for (i++; ;) {
        if (i >= src.length) fail("unterminated string");
        if (src[i] === "'" && src[i + 1] === "'") {
          v += "'";
          i += 2;
        } else if (src[i] === "'") {
          i++;
          break;
        } else v += src[i++];
      }
      n = { k: "lit", v };
    } else if (/[-\d]/.test(src[i] ?? "")) {
      const m = /^-?\d+/.exec(src.slice(i)) ?? fail("expected a number");
      i += m[0].length;
      n = { k: "lit", v: Number(m[0]) };
    } else {
      const fn = ident();
      ws();
      if (src[i++] !== "(") fail("expected (");
      const args: Node[] = [];
      for (ws(); src[i] !== ")"; ws()) {
        args.push(expr());
        ws();
        if (src[i] === ",") i++;
        else if (src[i] !== ")") fail("expected , or )");
      }
      i++;
      n = { k: "call", fn, args };
    }
    for (;;) {
      ws();
      if (src[i] === ".") {
        i++;
        n = { k: "prop", obj: n, name: ident() };
      } else if (src[i] === "[") {
        i++;
        const idx = expr();
        ws();
        if (src[i++] !== "]") fail("expected ]");
        n = { k: "index", obj: n, idx };
      } else return n;
    }
  };
  const n = expr();
  ws();
  if (i !== src.length) fail("trailing text");
  return n;
}

interface Env {
  /** A template parameter's value (the deployment's, else its default). */
  parameter(name: string): Value;
  /** A template variable, evaluated on first use. */
  variable(name: string): Value;
  /** Bicep: a name that is neither a local, a parameter nor a variable (a resource or module). */
  symbol(name: string): Value;
  locals: Record<string, Value>;
  copyIndex?: number;
}
const withLocals = (env: Env, locals: Record<string, Value>, copyIndex?: number): Env => ({
  ...env,
  locals: { ...env.locals, ...locals },
  copyIndex: copyIndex ?? env.copyIndex,
});

const RESOURCE_GROUP = {
  id: "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/diskdelta",
  name: "diskdelta",
  location: "westeurope",
};
const hash = (args: Value[]) => crypto.createHash("sha256").update(JSON.stringify(args)).digest("hex");

function deepEqual(a: Value, b: Value): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}
function canonical(v: Value): Value {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === "object")
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canonical((v as Record<string, Value>)[k])]),
    );
  return v;
}
const isObject = (v: Value): v is Record<string, Value> =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !isMarker(v) && !isClosure(v);
function keyOf(o: Record<string, Value>, name: string): string | undefined {
  return Object.keys(o).find((k) => k.toLowerCase() === name.toLowerCase());
}
function mergeObjects(a: Record<string, Value>, b: Record<string, Value>): Record<string, Value> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const existing = keyOf(out, k);
    out[existing ?? k] =
      existing && isObject(out[existing]) && isObject(v)
        ? mergeObjects(out[existing] as Record<string, Value>, v)
        : v;
  }
  return out;
}
const str = (v: Value): string =>
  typeof v === "string" ? v : typeof v === "number" ? String(v) : JSON.stringify(v);
function call(f: Value, ...args: Value[]): Value {
  if (!isClosure(f)) throw new Error("not a lambda");
  const { params, body, env } = f.$lambda;
  return evaluate(body, withLocals(env, Object.fromEntries(params.map((p, i) => [p, args[i]]))));
}
function nums(args: Value[]): number[] {
  return args
    .flatMap((a) => (Array.isArray(a) ? a : [a]))
    .map((n) => {
      if (typeof n !== "number") throw new Error(`not a number: ${str(n)}`);
      return n;
    });
}

/** The template functions the two templates call, by lower-case name (ARM names are case-insensitive). */
const FUNCTIONS: Record<string, (args: Value[], env: Env) => Value> = {
  parameters: ([n], env) => env.parameter(String(n)),
  variables: ([n], env) => env.variable(String(n)),
  lambdavariables: ([n], env) => {
    if (!(String(n) in env.locals)) throw new Error(`no lambda variable ${str(n)}`);
    return env.locals[String(n)];
  },
  copyindex: ([offset], env) => {
    if (env.copyIndex === undefined) throw new Error("copyIndex() outside a copy loop");
    return env.copyIndex + (typeof offset === "number" ? offset : 0);
  },
  map: ([a, f]) => (a as Value[]).map((x) => call(f, x)),
  filter: ([a, f]) => (a as Value[]).filter((x) => call(f, x) === true),
  first: ([a]) => (typeof a === "string" ? a.slice(0, 1) : ((a as Value[])[0] ?? null)),
  length: ([a]) => (isObject(a) ? Object.keys(a).length : (a as string | Value[]).length),
  union: (args) => {
    if (args.every(Array.isArray)) {
      const out: Value[] = [];
      for (const x of (args as Value[][]).flat()) if (!out.some((y) => deepEqual(x, y))) out.push(x);
      return out;
    }
    if (args.every(isObject)) return (args as Record<string, Value>[]).reduce(mergeObjects, {});
    throw new Error("union() of arrays or of objects only");
  },
  createobject: (args) => {
    const o: Record<string, Value> = {};
    for (let i = 0; i < args.length; i += 2) o[String(args[i])] = args[i + 1];
    return o;
  },
  createarray: (args) => args,
  contains: ([c, x]) => {
    if (Array.isArray(c)) return c.some((y) => deepEqual(x, y));
    if (isObject(c)) return keyOf(c, String(x)) !== undefined;
    if (typeof c === "string") return c.includes(String(x));
    throw new Error("contains() of an array, object or string only");
  },
  empty: ([x]) =>
    x === null ||
    x === "" ||
    (Array.isArray(x) && x.length === 0) ||
    (isObject(x) && Object.keys(x).length === 0),
  tolower: ([s]) => String(s).toLowerCase(),
  toupper: ([s]) => String(s).toUpperCase(),
  startswith: ([s, p]) => String(s).toLowerCase().startsWith(String(p).toLowerCase()),
  endswith: ([s, p]) => String(s).toLowerCase().endsWith(String(p).toLowerCase()),
  split: ([s, d]) => String(s).split(String(d)),
  format: ([f, ...args]) =>
    String(f).replace(/\{(\d+)\}/g, (_, n: string) => {
      if (Number(n) >= args.length) throw new Error(`format(): no argument ${n}`);
      return str(args[Number(n)]);
    }),
  take: ([a, n]) => (a as string | Value[]).slice(0, Number(n)),
  not: ([x]) => x !== true,
  and: (args) => args.every((x) => x === true),
  or: (args) => args.some((x) => x === true),
  equals: ([a, b]) => deepEqual(a, b),
  less: ([a, b]) => (a as number) < (b as number),
  lessorequals: ([a, b]) => (a as number) <= (b as number),
  greater: ([a, b]) => (a as number) > (b as number),
  greaterorequals: ([a, b]) => (a as number) >= (b as number),
  add: (args) => nums(args).reduce((x, y) => x + y),
  sub: ([a, b]) => (a as number) - (b as number),
  mul: (args) => nums(args).reduce((x, y) => x * y),
  div: ([a, b]) => Math.trunc((a as number) / (b as number)),
  mod: ([a, b]) => (a as number) % (b as number),
  min: (args) => Math.min(...nums(args)),
  max: (args) => Math.max(...nums(args)),
  coalesce: (args) => args.find((x) => x !== null && x !== undefined) ?? null,
  true: () => true,
  false: () => false,
  null: () => null,
  uniquestring: (args) =>
    BigInt(`0x${hash(args)}`)
      .toString(36)
      .slice(0, 13),
  guid: (args) =>
    hash(args)
      .slice(0, 32)
      .replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5"),
  // Bicep's resourceGroup(sub, name) is a module scope; ARM's nested deployment says the same with
  // its subscriptionId and resourceGroup properties.
  resourcegroup: (args) =>
    args.length === 0 ? RESOURCE_GROUP : { subscriptionId: args[0], resourceGroup: args[args.length - 1] },
  environment: () => ({ suffixes: { storage: "core.windows.net" } }),
  resourceid: (args) => ({ $marker: `resourceId(${args.map(str).join(", ")})` }),
  subscriptionresourceid: (args) => ({ $marker: `subscriptionResourceId(${args.map(str).join(", ")})` }),
  reference: ([id]) => ({ $marker: `reference(${str(id)})` }),
};

const OPERATORS: Record<string, string> = {
  "!": "not",
  "==": "equals",
  "&&": "and",
  "||": "or",
  "<": "less",
  "<=": "lessorequals",
  ">": "greater",
  ">=": "greaterorequals",
  "+": "add",
  "-": "sub",
  "*": "mul",
  "/": "div",
  "%": "mod",
  "??": "coalesce",
};

function evaluate(n: Node, env: Env): Value {
  switch (n.k) {
    case "lit":
      return n.v;
    case "id":
      if (n.name in env.locals) return env.locals[n.name];
      return env.symbol(n.name);
    case "interp":
      return n.parts.map((p) => (typeof p === "string" ? p : str(evaluate(p, env)))).join("");
    case "obj":
      return Object.fromEntries(n.entries.map(([k, v]) => [k, evaluate(v, env)]));
    case "arr":
      return n.items.map((x) => evaluate(x, env));
    case "for":
      return (evaluate(n.src, env) as Value[]).map((x, i) =>
        evaluate(n.body, withLocals(env, { [n.name]: x }, i)),
      );
    case "lambda":
      return { $lambda: { params: n.params, body: n.body, env } };
    case "prop": {
      const o = evaluate(n.obj, env);
      if (isMarker(o)) return { $marker: `${o.$marker}.${n.name}` };
      const key = isObject(o) ? keyOf(o, n.name) : undefined;
      if (key === undefined) throw new Error(`no property ${n.name} in ${str(o)}`);
      return (o as Record<string, Value>)[key];
    }
    case "index": {
      const o = evaluate(n.obj, env);
      const i = evaluate(n.idx, env);
      if (Array.isArray(o) && typeof i === "number") {
        if (i < 0 || i >= o.length) throw new Error(`index ${i} out of range of ${str(o)}`);
        return o[i];
      }
      if (isObject(o) && typeof i === "string" && keyOf(o, i) !== undefined) return o[keyOf(o, i)!];
      throw new Error(`cannot index ${str(o)} with ${str(i)}`);
    }
    case "op": {
      if (n.op === "?:") return evaluate(n.args[evaluate(n.args[0], env) === true ? 1 : 2], env);
      const args = n.args.map((a) => evaluate(a, env));
      if (n.op === "!=") return !deepEqual(args[0], args[1]);
      if (n.op === "neg") return -(args[0] as number);
      return FUNCTIONS[OPERATORS[n.op]](args, env);
    }
    case "call": {
      const fn = n.fn.toLowerCase();
      // ARM: lambda('x', body) defers its body; if() evaluates only the branch it takes.
      if (fn === "lambda")
        return {
          $lambda: {
            params: n.args.slice(0, -1).map((a) => String(evaluate(a, env))),
            body: n.args[n.args.length - 1],
            env,
          },
        };
      if (fn === "if") return evaluate(n.args[evaluate(n.args[0], env) === true ? 1 : 2], env);
      const f = FUNCTIONS[fn];
      if (!f) throw new Error(`function ${n.fn} is not modelled here`);
      return f(
        n.args.map((a) => evaluate(a, env)),
        env,
      );
    }
  }
}

/** An ARM JSON value: strings "[...]" are expressions ("[[" escapes a literal bracket), at any depth. */
function evaluateArm(v: Value, env: Env): Value {
  if (typeof v === "string") {
    if (v.startsWith("[[")) return v.slice(1);
    if (v.startsWith("[") && v.endsWith("]")) return evaluate(parseArmExpression(v.slice(1, -1)), env);
    return v;
  }
  if (Array.isArray(v)) return v.map((x) => evaluateArm(x, env));
  if (v && typeof v === "object")
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, evaluateArm(x, env)]));
  return v;
}

/** A nested deployment (ARM) or module instance (Bicep), as the two templates compute it. */
interface Deployment {
  name: string;
  subscriptionId: Value;
  resourceGroup: Value;
  params: Record<string, Value>;
}

interface Evaluated {
  parameters: Record<string, Value>;
  variables: Record<string, Value>;
  /** Evaluated when called: some outputs name resources, which stay markers. */
  outputs: Record<string, () => Value>;
  deployments: Deployment[];
}

function lazyEnv(
  paramValue: (name: string, env: Env) => Value,
  variableValue: (name: string, env: Env) => Value,
  symbol: (name: string, env: Env) => Value,
): Env {
  const params = new Map<string, Value>();
  const vars = new Map<string, Value>();
  const env: Env = {
    parameter: (n) => {
      if (!params.has(n)) params.set(n, paramValue(n, env));
      return params.get(n);
    },
    variable: (n) => {
      if (!vars.has(n)) vars.set(n, variableValue(n, env));
      return vars.get(n);
    },
    symbol: (n) => symbol(n, env),
    locals: {},
  };
  return env;
}

function evaluateArmTemplate(given: Record<string, Value>): Evaluated {
  const env = lazyEnv(
    (n, e) => {
      if (!(n in arm.parameters)) throw new Error(`no parameter ${n}`);
      if (n in given) return given[n];
      if (!("defaultValue" in arm.parameters[n])) throw new Error(`parameter ${n} has no value`);
      return evaluateArm(arm.parameters[n].defaultValue, e);
    },
    (n, e) => {
      if (!(n in (arm.variables ?? {}))) throw new Error(`no variable ${n}`);
      return evaluateArm(arm.variables![n], e);
    },
    (n) => {
      throw new Error(`ARM has no name ${n}`);
    },
  );
  const deployments: Deployment[] = [];
  for (const r of arm.resources.filter((x) => x.type === "Microsoft.Resources/deployments")) {
    const copy = r.copy as { count: string } | undefined;
    const count = copy ? (evaluateArm(copy.count, env) as number) : 1;
    for (let i = 0; i < count; i++) {
      const e = copy ? withLocals(env, {}, i) : env;
      if (r.condition !== undefined && evaluateArm(r.condition, e) !== true) continue;
      const params = r.properties!.parameters as Record<string, { value: Value }>;
      deployments.push({
        name: evaluateArm(r.name, e) as string,
        subscriptionId: evaluateArm(r.subscriptionId, e),
        resourceGroup: evaluateArm(r.resourceGroup, e),
        params: Object.fromEntries(Object.entries(params).map(([k, v]) => [k, evaluateArm(v.value, e)])),
      });
    }
  }
  return {
    parameters: Object.fromEntries(Object.keys(arm.parameters).map((n) => [n, env.parameter(n)])),
    variables: Object.fromEntries(Object.keys(arm.variables ?? {}).map((n) => [n, env.variable(n)])),
    outputs: Object.fromEntries(
      Object.entries(arm.outputs ?? {}).map(([n, o]) => [n, () => evaluateArm(o.value, env)]),
    ),
    deployments,
  };
}

/** Every `param`, `var`, `output` and `module` of main.bicep, parsed. */
function bicepDeclarations(text: string) {
  const at = (re: RegExp) =>
    [...text.matchAll(re)].map((m) => ({ m, parser: new BicepParser(text, m.index + m[0].length) }));
  const params = new Map<string, Node | undefined>();
  for (const { m, parser } of at(/^param (\w+) \w+( = )?/gm))
    params.set(m[1], m[2] ? parser.expr() : undefined);
  const vars = new Map<string, Node>();
  for (const { m, parser } of at(/^var (\w+) = /gm)) vars.set(m[1], parser.expr());
  const outputs = new Map<string, Node>();
  for (const { m, parser } of at(/^output (\w+) \w+ = /gm)) outputs.set(m[1], parser.expr());
  const modules = new Map<string, { path: string; condition?: Node; body: Node }>();
  for (const { m, parser } of at(/^module (\w+) '([^']+)' = /gm)) {
    let condition: Node | undefined;
    if (parser.atWord("if")) {
      parser.i += 2;
      parser.eat("(");
      condition = parser.expr();
      parser.eat(")");
    }
    modules.set(m[1], { path: m[2], condition, body: parser.expr() });
  }
  const symbols = new Set([...text.matchAll(/^(?:resource|module) (\w+) /gm)].map((m) => m[1]));
  return { params, vars, outputs, modules, symbols };
}

function evaluateBicepTemplate(given: Record<string, Value>): Evaluated {
  const d = bicepDeclarations(bicep);
  const env = lazyEnv(
    (n, e) => {
      if (n in given) return given[n];
      const def = d.params.get(n);
      if (!def) throw new Error(`parameter ${n} has no value`);
      return evaluate(def, e);
    },
    (n, e) => evaluate(d.vars.get(n)!, e),
    (n, e) => {
      if (d.params.has(n)) return e.parameter(n);
      if (d.vars.has(n)) return e.variable(n);
      if (d.symbols.has(n)) return { $marker: n };
      if (FUNCTIONS[n.toLowerCase()]) throw new Error(`${n} used as a name`);
      throw new Error(`bicep: unknown name ${n}`);
    },
  );
  const deployments: Deployment[] = [];
  for (const mod of d.modules.values()) {
    if (mod.condition && evaluate(mod.condition, env) !== true) continue;
    const bodies = mod.body.k === "for" ? (evaluate(mod.body, env) as Value[]) : [evaluate(mod.body, env)];
    for (const b of bodies as {
      name: string;
      scope: { subscriptionId: Value; resourceGroup: Value };
      params: Record<string, Value>;
    }[])
      deployments.push({
        name: b.name,
        subscriptionId: b.scope.subscriptionId,
        resourceGroup: b.scope.resourceGroup,
        params: b.params,
      });
  }
  return {
    parameters: Object.fromEntries([...d.params.keys()].map((n) => [n, env.parameter(n)])),
    variables: Object.fromEntries([...d.vars.keys()].map((n) => [n, env.variable(n)])),
    outputs: Object.fromEntries([...d.outputs].map(([n, o]) => [n, () => evaluate(o, env)])),
    deployments,
  };
}

describe("ARM template (azuredeploy.json)", () => {
  test("parses, with the deployment schema", () => {
    expect(String((arm as unknown as { $schema: string }).$schema)).toMatch(/deploymentTemplate\.json/);
    expect(arm.resources.length).toBeGreaterThan(10);
  });

  test("every parameter is used outside the parameters section", () => {
    const body = JSON.stringify({ v: arm.variables, r: outerOnly(arm).resources, o: arm.outputs });
    for (const name of Object.keys(arm.parameters)) {
      expect({ name, used: body.includes(`parameters('${name}')`) }).toEqual({ name, used: true });
    }
  });

  test("every parameters()/variables() reference is declared", () => {
    const check = (t: ArmTemplate) => {
      const body = JSON.stringify({ v: t.variables, r: outerOnly(t).resources, o: t.outputs });
      for (const m of body.matchAll(/parameters\('(\w+)'\)/g))
        expect(Object.keys(t.parameters)).toContain(m[1]);
      for (const m of body.matchAll(/variables\('(\w+)'\)/g))
        expect(Object.keys(t.variables ?? {})).toContain(m[1]);
    };
    check(arm);
    for (const r of arm.resources) if (r.properties?.template) check(r.properties.template);
  });

  test("every resourceId/reference names a declared resource (type, and name where it is one expression)", () => {
    const declared = outerOnly(arm).resources;
    const types = new Set(declared.map((r) => r.type));
    const refs = strings(outerOnly(arm))
      .flatMap((s) => [...s.matchAll(/resourceId\('([^']+)', ((?:[^()]|\([^()]*\))+?)\)/g)])
      .map((m) => ({ type: m[1], args: m[2] }));
    expect(refs.length).toBeGreaterThan(10);
    for (const ref of refs) {
      if (ref.type === "Microsoft.Authorization/roleDefinitions") continue; // built-in, checked below
      expect({ ref: ref.type, declared: types.has(ref.type) }).toEqual({ ref: ref.type, declared: true });
      const args = ref.args.split(/, (?![^()]*\))/);
      if (args.length === 1 && ref.type.split("/").length === 2) {
        const names = declared.filter((r) => r.type === ref.type).map((r) => r.name);
        expect(names).toContain(`[${args[0]}]`);
      }
    }
    // Nested deployments name only the existing account their caller passes in.
    for (const r of arm.resources.filter((x) => x.properties?.template)) {
      for (const s of strings(r.properties!.template!.resources))
        for (const m of s.matchAll(/resourceId\('([^']+)', ([^)]+\))/g)) {
          if (m[1] === "Microsoft.Authorization/roleDefinitions") continue;
          expect([m[1], m[2]]).toEqual([
            "Microsoft.Storage/storageAccounts",
            "parameters('storageAccountName')",
          ]);
        }
    }
    // reference(x, ...) is always reference(resourceId(...)) here, so the check above covers it.
    for (const s of strings(arm))
      for (const m of s.matchAll(/reference\(([^,]+)/g)) expect(m[1]).toMatch(/^resourceId\(/);
  });

  test("role assignments use documented built-in role ids only", () => {
    const roles = arm.variables?.roles as Record<string, string>;
    for (const id of Object.values(roles)) expect(Object.keys(DOCUMENTED_ROLES)).toContain(id);
    const assigned = allResources(arm).filter((r) => r.type === "Microsoft.Authorization/roleAssignments");
    expect(assigned.length).toBeGreaterThanOrEqual(5);
    for (const r of assigned) {
      expect(String(r.properties?.roleDefinitionId)).toMatch(
        /subscriptionResourceId\('Microsoft.Authorization\/roleDefinitions', (variables\('roles'\)\.\w+|parameters\('roleDefinitionIds'\)\[copyIndex\(\)\])\)/,
      );
    }
    // The names used in comments match the ids.
    for (const [key, id] of Object.entries(roles)) {
      const words = DOCUMENTED_ROLES[id].toLowerCase().replace(/ /g, "");
      expect(key.toLowerCase()).toBe(words);
    }
  });

  test("no output carries a key, a connection string or a listKeys call", () => {
    expect(armText).not.toMatch(/listKeys|listAccountSas|listServiceSas/i);
    for (const [name, out] of Object.entries(arm.outputs ?? {})) {
      expect({ name, value: JSON.stringify(out.value) }).not.toMatchObject({
        value: expect.stringMatching(
          /ConnectionString|InstrumentationKey|AccountKey|primaryKey|secret|password/i,
        ),
      });
      expect(out.type).not.toMatch(/secure/i);
    }
  });

  test("storage the template creates has shared-key access off; app storage declares queues and tables", () => {
    const accounts = arm.resources.filter((r) => r.type === "Microsoft.Storage/storageAccounts");
    expect(accounts).toHaveLength(2);
    for (const a of accounts) expect(a.properties?.allowSharedKeyAccess).toBe(false);
    const vars = arm.variables as { queueNames: string[]; tablePrefix: string; tableNames: string[] };
    const expected = Object.values(QUEUES).flatMap((q) => [q, poisonQueue(q)]);
    expect([...vars.queueNames].sort()).toEqual([...expected].sort());
    expect(vars.tablePrefix).toBe("diskdelta");
    // Every table the engine opens (`${prefix}Name` in lib/lineage/tableStore.ts tableNames) is declared.
    const engineTables = [...ENGINE.matchAll(/`\$\{prefix\}(\w+)`/g)].map((m) => m[1]);
    expect(engineTables).toEqual(expect.arrayContaining(["Disks", "Runs", "Points", "Progress"]));
    expect([...vars.tableNames].sort()).toEqual(
      [...new Set(engineTables)].map((t) => `[format('{0}${t}', variables('tablePrefix'))]`).sort(),
    );
    const types = arm.resources.map((r) => r.type);
    expect(types).toContain("Microsoft.Storage/storageAccounts/queueServices/queues");
    expect(types).toContain("Microsoft.Storage/storageAccounts/tableServices/tables");
  });

  test("Flex Consumption on Node 22 with a user-assigned identity; App Insights with local auth off", () => {
    const plan = arm.resources.find((r) => r.type === "Microsoft.Web/serverfarms")!;
    expect(plan.sku).toEqual({ name: "FC1", tier: "FlexConsumption" });
    const site = arm.resources.find((r) => r.type === "Microsoft.Web/sites")!;
    const cfg = site.properties?.functionAppConfig as { runtime: { name: string; version: string } };
    expect(cfg.runtime).toEqual({ name: "node", version: "22" });
    expect((site.identity as { type: string }).type).toBe("UserAssigned");
    const ai = arm.resources.find((r) => r.type === "Microsoft.Insights/components")!;
    expect(ai.properties?.DisableLocalAuth).toBe(true);
    // Flex refuses these two as app settings (they live in functionAppConfig).
    expect(armAppSettings()).not.toContain("FUNCTIONS_WORKER_RUNTIME");
    expect(armAppSettings()).not.toContain("FUNCTIONS_EXTENSION_VERSION");
  });

  test("the retention defaults are the app's own, so a disk registered later keeps what deployed ones keep", () => {
    expect(arm.parameters.retention.defaultValue).toEqual({
      keepLast: DEFAULT_POLICY.last,
      keepDaily: DEFAULT_POLICY.daily,
      keepWeekly: DEFAULT_POLICY.weekly,
      keepMonthly: DEFAULT_POLICY.monthly,
    });
  });

  test("main.parameters.json only sets declared parameters", () => {
    const p = JSON.parse(read("main.parameters.json")) as { parameters: Record<string, unknown> };
    for (const name of Object.keys(p.parameters)) expect(Object.keys(arm.parameters)).toContain(name);
  });
});

describe("Bicep and ARM JSON declare the same deployment", () => {
  const b = bicepDecls(bicep);

  test("same parameters with the same types and defaults", () => {
    expect(b.params.map((p) => p.name).sort()).toEqual(Object.keys(arm.parameters).sort());
    for (const p of b.params) {
      expect({ p: p.name, type: arm.parameters[p.name].type }).toEqual({ p: p.name, type: p.type });
      const armDefault = arm.parameters[p.name].defaultValue;
      if (typeof armDefault === "string" && !armDefault.startsWith("["))
        expect(p.default).toBe(`'${armDefault}'`);
      if (typeof armDefault === "number") expect(p.default).toBe(String(armDefault));
    }
  });

  test("same resource types (modules are nested deployments) and outputs", () => {
    const bicepTypes = [
      ...b.resources.filter((r) => !r.existing).map((r) => r.type),
      ...b.modules.map(() => "Microsoft.Resources/deployments"),
    ].sort();
    expect(bicepTypes).toEqual(arm.resources.map((r) => r.type).sort());
    // Each nested deployment's inner template says which module file it is, and declares what that
    // file declares.
    const inlined = new Set<string>();
    for (const r of arm.resources.filter((x) => x.type === "Microsoft.Resources/deployments")) {
      const inner = r.properties!.template! as ArmTemplate & { metadata?: { comment?: string } };
      const file = /modules\/\w+\.bicep/.exec(String(inner.metadata?.comment))?.[0] ?? "(none)";
      expect(b.modules.map((m) => m.path)).toContain(file);
      inlined.add(file);
      const mod = bicepDecls(read(file));
      expect({ file, types: inner.resources.map((x) => x.type) }).toEqual({
        file,
        types: mod.resources.filter((x) => !x.existing).map((x) => x.type),
      });
      expect({ file, params: Object.keys(inner.parameters).sort() }).toEqual({
        file,
        params: mod.params.map((p) => p.name).sort(),
      });
    }
    expect([...inlined].sort()).toEqual([...new Set(b.modules.map((m) => m.path))].sort());
    expect(b.outputs.sort()).toEqual(Object.keys(arm.outputs ?? {}).sort());
  });

  test("same app settings", () => {
    expect(bicepAppSettings().sort()).toEqual(armAppSettings().sort());
  });

  test("same documented role ids, each with a comment naming the role", () => {
    const ids = (text: string) => new Set(text.match(GUID) ?? []);
    expect([...ids(bicep)].sort()).toEqual([...ids(JSON.stringify(arm.variables?.roles))].sort());
    for (const line of bicep
      .split("\n")
      .filter((l) => GUID.test(l) || /roleDefinitionIds: \[|roleDefinitions', roles\./.test(l))) {
      GUID.lastIndex = 0;
      expect(line).toMatch(/\/\/ (Storage|Monitoring|Disk) [A-Z]/);
    }
    for (const [id, name] of Object.entries(DOCUMENTED_ROLES)) {
      const line = bicep.split("\n").find((l) => l.includes(id));
      expect(line).toContain(`// ${name}`);
    }
  });

  test("same queues, tables, containers and storage settings", () => {
    const vars = arm.variables as Record<string, unknown>;
    for (const q of vars.queueNames as string[]) expect(bicep).toContain(`'${q}'`);
    expect(bicep).toMatch(/var tablePrefix = 'diskdelta'/);
    const bicepTables = [
      .../var tableNames = \[([\s\S]*?)\]/.exec(bicep)![1].matchAll(/'\$\{tablePrefix\}(\w+)'/g),
    ].map((m) => `[format('{0}${m[1]}', variables('tablePrefix'))]`);
    expect(bicepTables).toEqual(vars.tableNames);
    expect(bicep).toMatch(new RegExp(`var backupContainer = '${String(vars.backupContainer)}'`));
    expect(bicep).toMatch(new RegExp(`var deploymentContainer = '${String(vars.deploymentContainer)}'`));
    expect(bicep.match(/allowSharedKeyAccess: false/g)).toHaveLength(2);
    expect(bicep).toMatch(/DisableLocalAuth: true/);
    expect(bicep).toMatch(/runtime: \{ name: 'node', version: '22' \}/);
    expect(bicep).toMatch(/sku: \{ name: 'FC1', tier: 'FlexConsumption' \}/);
    expect(bicep).not.toMatch(/listKeys/);
  });

  test("the ARM template inlines exactly the files Bicep loads (workbook, every alert query)", () => {
    const vars = arm.variables as Record<string, string>;
    expect(bicep).toContain("loadTextContent('workbook.json')");
    expect(vars.workbookSerializedData).toBe(read("workbook.json"));
    expect(Object.keys(ALERT_QUERIES).sort()).toEqual(["failedRun", "noHeartbeat", "staleRestorePoint"]);
    for (const [name, text] of Object.entries(ALERT_QUERIES)) {
      expect(bicep).toContain(`loadTextContent('queries/${name}.kql')`);
      expect({ name, inlined: vars[`${name}Query`] }).toEqual({ name, inlined: text });
    }
  });

  test("the same alert rules, each wired to the action group and reading one query file", () => {
    const rules = arm.resources.filter((r) => r.type === "Microsoft.Insights/scheduledQueryRules");
    const bicepRules = [...bicep.matchAll(/^resource (\w+) 'Microsoft.Insights\/scheduledQueryRules@/gm)].map(
      (m) => m[1],
    );
    expect(bicepRules).toEqual(["failedRunAlert", "staleRestorePointAlert", "noHeartbeatAlert"]);
    expect(rules).toHaveLength(bicepRules.length);
    expect(
      bicep.match(/actions: \{ actionGroups: empty\(alertEmail\) \? \[\] : \[actionGroup\.id\] \}/g),
    ).toHaveLength(bicepRules.length);
    const queries = rules.map((r) => {
      const p = r.properties as { actions: unknown; criteria: { allOf: { query: string }[] } };
      expect(p.actions).toEqual({ actionGroups: "[variables('alertActionGroups')]" });
      return p.criteria.allOf[0].query;
    });
    expect(queries.sort()).toEqual(
      Object.keys(ALERT_QUERIES)
        .map((n) => `[variables('${n}Query')]`)
        .sort(),
    );
  });

  test("the timer alerts' window: two schedule intervals rounded up to an allowed granularity, at most two days", () => {
    const vars = arm.variables as Record<string, unknown>;
    const windows = vars.alertWindows as { minutes: number; iso: string }[];
    expect(windows.map((w) => w.minutes)).toEqual(WINDOW_MINUTES);
    for (const w of windows) expect(isoMinutes(w.iso)).toBe(w.minutes);
    // Bicep declares the same list, line by line.
    const bicepWindows = [...bicep.matchAll(/^\s+\{ minutes: (\d+), iso: '(\w+)' \}$/gm)].map((m) => ({
      minutes: Number(m[1]),
      iso: m[2],
    }));
    expect(bicepWindows).toEqual(windows);
    // The expression both templates use, evaluated here for the intervals that matter.
    expect(vars.tickWindow).toBe(
      "[first(filter(variables('alertWindows'), lambda('w', greaterOrEquals(lambdaVariables('w').minutes, min(mul(2, parameters('defaultIntervalMinutes')), 2880)))))]",
    );
    expect(bicep).toContain(
      "var tickWindow = first(filter(alertWindows, w => w.minutes >= min(2 * defaultIntervalMinutes, 2880)))",
    );
    expect(vars.tickAlertFrequency).toBe(
      "[if(less(variables('tickWindow').minutes, 60), variables('tickWindow').iso, 'PT1H')]",
    );
    expect(bicep).toContain("var tickAlertFrequency = tickWindow.minutes < 60 ? tickWindow.iso : 'PT1H'");
    const tickWindow = (interval: number) => windows.find((w) => w.minutes >= Math.min(2 * interval, 2880))!;
    expect(tickWindow(720).iso).toBe("P1D"); // the default schedule: two ticks
    expect(tickWindow(5).iso).toBe("PT10M");
    expect(tickWindow(360).iso).toBe("P1D");
    expect(tickWindow(1440).iso).toBe("P2D");
    expect(tickWindow(7 * 1440).iso).toBe("P2D"); // clamped: a timer this sparse cannot be watched
    for (const interval of [5, 30, 60, 720, 1440])
      expect(tickWindow(interval).minutes).toBeGreaterThanOrEqual(interval);
    // Both timer alerts use it; the failed-run alert keeps its five minutes.
    for (const name of ["stale-point", "no-heartbeat"]) {
      const rule = arm.resources.find((r) => r.name.includes(`-${name}-`))!;
      expect(rule.properties).toMatchObject({
        windowSize: "[variables('tickWindow').iso]",
        evaluationFrequency: "[variables('tickAlertFrequency')]",
        autoMitigate: true,
      });
    }
    expect(bicep.match(/windowSize: tickWindow\.iso/g)).toHaveLength(2);
    expect(bicep.match(/evaluationFrequency: tickAlertFrequency/g)).toHaveLength(2);
  });

  test("defaultIntervalMinutes is what the default schedule means", () => {
    const schedule = String(arm.parameters.schedule.defaultValue);
    expect(arm.parameters.defaultIntervalMinutes.defaultValue).toBe(intervalOf(schedule) / 60_000);
  });
});

describe("KQL reads exactly the telemetry names lib/telemetry.ts sends", () => {
  const workbook = JSON.parse(read("workbook.json")) as {
    items: { type: number; content: { query?: string } }[];
  };
  const workbookQueries = workbook.items.filter((i) => i.type === 3).map((i) => i.content.query!);
  const alertQueries = Object.values(ALERT_QUERIES);
  const all = [...workbookQueries, ...alertQueries];
  const known = [RUN_EVENT, RUN_FAILED_EVENT, COPY_RATE_METRIC, DISK_STATUS_EVENT, TIMER_TICK_EVENT];

  test("every name compared in a query is an exported telemetry name", () => {
    for (const q of all) {
      const names = [...q.matchAll(/name == "([^"]+)"/g)].map((m) => m[1]);
      expect(names.length).toBeGreaterThan(0);
      for (const n of names) expect(known).toContain(n);
    }
  });

  test("the workbook shows each event and the metric; the alerts read failures, disk statuses and ticks", () => {
    for (const n of known) expect(workbookQueries.some((q) => q.includes(`"${n}"`))).toBe(true);
    expect(ALERT_QUERIES.failedRun).toContain(`name == "${RUN_FAILED_EVENT}"`);
    // Stale: the newest status of each disk, firing where the app said stale.
    expect(ALERT_QUERIES.staleRestorePoint).toContain(`name == "${DISK_STATUS_EVENT}"`);
    expect(ALERT_QUERIES.staleRestorePoint).toMatch(
      /summarize arg_max\(timestamp, stale\b[^\n]*\) by diskId\n\| where stale == "true"/,
    );
    // No heartbeat: one row exactly when no tick arrived.
    expect(ALERT_QUERIES.noHeartbeat).toContain(`name == "${TIMER_TICK_EVENT}"`);
    expect(ALERT_QUERIES.noHeartbeat).toMatch(/\| summarize ticks = count\(\)\n\| where ticks == 0\s*$/);
  });

  test("every custom dimension and measurement a query reads is one that event or metric carries", () => {
    const carried: Record<string, { dims: readonly string[]; measurements: readonly string[] }> = {
      [RUN_EVENT]: { dims: RUN_EVENT_PROPERTIES, measurements: RUN_EVENT_MEASUREMENTS },
      [RUN_FAILED_EVENT]: { dims: RUN_FAILED_PROPERTIES, measurements: [] },
      [COPY_RATE_METRIC]: { dims: COPY_RATE_PROPERTIES, measurements: [] },
      [DISK_STATUS_EVENT]: { dims: DISK_STATUS_PROPERTIES, measurements: DISK_STATUS_MEASUREMENTS },
      [TIMER_TICK_EVENT]: { dims: TIMER_TICK_PROPERTIES, measurements: TIMER_TICK_MEASUREMENTS },
    };
    let checked = 0;
    for (const q of all) {
      const names = [...q.matchAll(/name == "([^"]+)"/g)].map((m) => m[1]);
      expect(names).toHaveLength(1); // one event or metric per query, so its fields are known
      const { dims, measurements } = carried[names[0]];
      for (const m of q.matchAll(/customDimensions\.(\w+)/g)) {
        expect({ query: names[0], dim: m[1], carried: dims.includes(m[1]) }).toMatchObject({ carried: true });
        checked++;
      }
      for (const m of q.matchAll(/customMeasurements\.(\w+)/g)) {
        expect({ query: names[0], m: m[1], carried: measurements.includes(m[1]) }).toMatchObject({
          carried: true,
        });
        checked++;
      }
      // Metrics are read through the columns a customMetrics row has.
      if (names[0] === COPY_RATE_METRIC) {
        expect(q).toMatch(/^customMetrics/);
        for (const m of q.matchAll(/\b(value\w*)\b/g))
          expect(["value", "valueSum", "valueCount", "valueMin", "valueMax"]).toContain(m[1]);
      } else {
        expect(q.replace(/^(\/\/.*\n|let .*\n)*/, "")).toMatch(/^customEvents/);
      }
    }
    expect(checked).toBeGreaterThan(20);
  });

  test("the alert queries need no value from the templates (the app computes intervals and staleness)", () => {
    for (const [name, q] of Object.entries(ALERT_QUERIES))
      expect({ name, placeholder: /__\w+__/.test(q) }).toEqual({ name, placeholder: false });
    expect(armText).not.toMatch(/__DEFAULT_INTERVAL_MINUTES__|__DISK_INTERVALS__/);
    expect(bicep).not.toMatch(/__DEFAULT_INTERVAL_MINUTES__|__DISK_INTERVALS__/);
  });
});

const SUB_A = "11111111-1111-1111-1111-111111111111";
const SUB_B = "22222222-2222-2222-2222-222222222222";
const PROD_ACCOUNT = `/subscriptions/${SUB_A}/resourceGroups/prod/providers/Microsoft.Storage/storageAccounts/prodacct`;
/**
 * Two page blobs in one account; managed disks in one resource group written two ways (ids are
 * case-insensitive) and one in another subscription; own retention (whole and partial), interval,
 * container and blob on some.
 */
const MIXED_DISKS = [
  {
    id: "vm1-os",
    source: "https://prodacct.blob.core.windows.net/vhds/vm1-os.vhd",
    sourceAccountId: PROD_ACCOUNT,
  },
  {
    id: "vm1-data",
    source: "https://prodacct.blob.core.windows.net/vhds/vm1-data.vhd",
    sourceAccountId: PROD_ACCOUNT,
    intervalMinutes: 60,
  },
  {
    id: "vm2-os",
    source: `/subscriptions/${SUB_A}/resourceGroups/Prod-VMs/providers/Microsoft.Compute/disks/vm2-os`,
    retention: { keepLast: 30 },
  },
  {
    id: "vm2-data",
    source: `/subscriptions/${SUB_A}/resourcegroups/prod-vms/providers/Microsoft.Compute/disks/vm2-data`,
    backupContainer: "vm2",
    backupBlob: "vm2/data",
    intervalMinutes: 240,
    retention: { keepLast: 7, keepDaily: 7, keepWeekly: 0, keepMonthly: 0 },
  },
  {
    id: "vm3-os",
    source: `/subscriptions/${SUB_B}/resourceGroups/other-team/providers/Microsoft.Compute/disks/vm3-os`,
  },
];
const EXISTING_BACKUP = `/subscriptions/${SUB_B}/resourceGroups/backup/providers/Microsoft.Storage/storageAccounts/bak`;
const PARAMETER_CASES: Record<string, Record<string, Value>> = {
  "the defaults": {},
  "page blobs and managed disks": { disks: MIXED_DISKS },
  "an existing backup account and a partial deployment-wide retention": {
    disks: MIXED_DISKS,
    existingBackupAccountId: EXISTING_BACKUP,
    retention: { keepLast: 30, keepMonthly: 24 },
  },
  "a short schedule and an alert address": { defaultIntervalMinutes: 5, alertEmail: "ops@example.com" },
};

/**
 * The POST /api/disks body (the README's HTTP API section; issue 12 item 3: retention is
 * `retention: {keepLast, keepDaily, keepWeekly, keepMonthly}` everywhere): each field and its JSON type.
 */
const REGISTER_BODY: Record<string, string> = {
  id: "string",
  source: "string",
  backupAccount: "string",
  backupContainer: "string",
  backupBlob: "string",
  intervalMinutes: "number",
  retention: "object",
};
const RETENTION_FIELDS = ["keepLast", "keepDaily", "keepWeekly", "keepMonthly"];
const APP_RETENTION = { keepLast: 14, keepDaily: 0, keepWeekly: 4, keepMonthly: 12 };
/** Role ids as their documented names (an unknown id stays as it is, and fails the comparison). */
const named = (ids: Value) => (ids as string[]).map((id) => DOCUMENTED_ROLES[id] ?? id);

describe("Bicep and ARM JSON compute the same deployment (expressions evaluated offline)", () => {
  test.each(Object.entries(PARAMETER_CASES))(
    "%s: same parameters, variables, registrations and role deployments",
    (_, given) => {
      const b = evaluateBicepTemplate(given);
      const a = evaluateArmTemplate(given);
      expect(b.parameters).toEqual(a.parameters);
      expect(Object.keys(b.variables).length).toBeGreaterThan(15);
      for (const [name, value] of Object.entries(b.variables))
        expect({ name, value }).toEqual({ name, value: a.variables[name] });
      for (const name of ["DISK_REGISTRATIONS", "BACKUP_ACCOUNT_URL"])
        expect({ name, value: b.outputs[name]() }).toEqual({ name, value: a.outputs[name]() });
      const comparable = (ds: Deployment[]) =>
        ds
          .map(({ params: { principalId: _principal, ...params }, ...d }) => ({ ...d, params }))
          .sort((x, y) => x.name.localeCompare(y.name));
      expect(comparable(b.deployments)).toEqual(comparable(a.deployments));
      // Every role goes to the app's own identity.
      expect(bicep).toMatch(/^resource identity 'Microsoft\.ManagedIdentity\/userAssignedIdentities@/m);
      for (const d of b.deployments)
        expect(d.params.principalId).toEqual({ $marker: "identity.properties.principalId" });
      const identity = `resourceId(Microsoft.ManagedIdentity/userAssignedIdentities, ${String(a.variables.identityName)})`;
      for (const d of a.deployments)
        expect(d.params.principalId).toEqual({
          $marker: `reference(${JSON.stringify({ $marker: identity })}).principalId`,
        });
    },
  );

  test("a page blob without sourceAccountId, or a malformed disk id, fails both deployments before anything is granted", () => {
    const noAccount = { disks: [{ id: "x", source: "https://a.blob.core.windows.net/c/x.vhd" }] };
    expect(() => evaluateArmTemplate(noAccount)).toThrow(/no property sourceAccountId/);
    expect(() => evaluateBicepTemplate(noAccount)).toThrow(/no property sourceAccountId/);
    const malformed = { disks: [{ id: "x", source: `/subscriptions/${SUB_A}` }] };
    expect(() => evaluateArmTemplate(malformed)).toThrow(/out of range/);
    expect(() => evaluateBicepTemplate(malformed)).toThrow(/out of range/);
  });
});

describe("managed disks", () => {
  const mixed = evaluateArmTemplate({ disks: MIXED_DISKS });

  test("the resource group of each managed disk, read from its id, gets the three disk roles, once per group", () => {
    const groups = mixed.deployments.filter((d) => d.name.startsWith("diskdelta-disks-"));
    expect(
      groups.map(({ subscriptionId, resourceGroup, params }) => ({
        subscriptionId,
        resourceGroup,
        roles: named(params.roleDefinitionIds),
      })),
    ).toEqual([
      { subscriptionId: SUB_A, resourceGroup: "prod-vms", roles: DISK_ROLES },
      { subscriptionId: SUB_B, resourceGroup: "other-team", roles: DISK_ROLES },
    ]);
    expect(new Set(groups.map((g) => g.name)).size).toBe(groups.length);
    // By documented id, in both templates.
    const roles = arm.variables!.roles as Record<string, string>;
    for (const name of DISK_ROLES) {
      const id = Object.keys(DOCUMENTED_ROLES).find((k) => DOCUMENTED_ROLES[k] === name)!;
      expect(Object.values(roles)).toContain(id);
      expect(bicep).toContain(`'${id}' // ${name}`);
    }
  });

  test("page blob accounts keep Storage Blob Data Contributor; a managed disk needs no account and gets no storage role", () => {
    const accounts = mixed.deployments.filter((d) => !d.name.startsWith("diskdelta-disks-"));
    expect(
      accounts.map(({ subscriptionId, resourceGroup, params }) => ({
        subscriptionId,
        resourceGroup,
        account: params.storageAccountName,
        roles: named(params.roleDefinitionIds),
      })),
    ).toEqual([
      {
        subscriptionId: SUB_A,
        resourceGroup: "prod",
        account: "prodacct",
        roles: ["Storage Blob Data Contributor"],
      },
    ]);
    expect(evaluateArmTemplate({}).deployments).toEqual([]);
    const onlyManaged = evaluateArmTemplate({ disks: MIXED_DISKS.slice(2) });
    expect(onlyManaged.deployments.map((d) => d.name.replace(/-[a-z0-9]+$/, ""))).toEqual([
      "diskdelta-disks",
      "diskdelta-disks",
    ]);
  });

  test("the disk roles are assigned on the resource group itself, one assignment per role, named stably", () => {
    const inner = arm.resources.find(
      (r) => (r.copy as { name?: string } | undefined)?.name === "managedDiskAccess",
    )!.properties!.template!;
    expect(inner.resources).toHaveLength(1);
    const [assignment] = inner.resources;
    expect(assignment.type).toBe("Microsoft.Authorization/roleAssignments");
    expect(assignment.scope).toBeUndefined(); // no scope: the resource group the deployment targets
    expect(assignment.name).toBe(
      "[guid(resourceGroup().id, parameters('principalId'), parameters('roleDefinitionIds')[copyIndex()])]",
    );
    expect(assignment.properties).toEqual({
      roleDefinitionId:
        "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', parameters('roleDefinitionIds')[copyIndex()])]",
      principalId: "[parameters('principalId')]",
      principalType: "ServicePrincipal",
    });
    const mod = read("modules/resourceGroupRoles.bicep");
    expect(mod).toContain("name: guid(resourceGroup().id, principalId, roleId)");
    expect(mod).not.toMatch(/^\s+scope:/m);
    expect(mod).toContain(
      "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)",
    );
  });
});

describe("DISK_REGISTRATIONS: the POST /api/disks bodies register-disks.sh sends", () => {
  const check = (bodies: Record<string, Value>[]) => {
    expect(bodies.length).toBeGreaterThan(0);
    for (const body of bodies) {
      for (const [field, value] of Object.entries(body))
        expect({ field, type: typeof value }).toEqual({ field, type: REGISTER_BODY[field] });
      for (const field of ["id", "source", "backupAccount", "backupContainer", "retention"])
        expect(body).toHaveProperty(field);
      for (const [field, count] of Object.entries(body.retention as Record<string, Value>))
        expect({ field, known: RETENTION_FIELDS.includes(field), count: typeof count }).toEqual({
          field,
          known: true,
          count: "number",
        });
      expect(JSON.stringify(body)).not.toMatch(/retain|sourceAccountId/i);
    }
  };

  test("page blobs and managed disks: the contract's shape, the deployment's retention where a disk gives none", () => {
    const a = evaluateArmTemplate({ disks: MIXED_DISKS });
    const bodies = a.outputs.DISK_REGISTRATIONS() as Record<string, Value>[];
    check(bodies);
    const backupAccount = a.variables.backupAccountUrl;
    expect(backupAccount).toMatch(/^https:\/\/diskdeltabak[a-z0-9]+\.blob\.core\.windows\.net$/);
    const common = { backupAccount, backupContainer: "diskdelta" };
    expect(bodies).toEqual([
      { id: "vm1-os", source: MIXED_DISKS[0].source, ...common, retention: APP_RETENTION },
      {
        id: "vm1-data",
        source: MIXED_DISKS[1].source,
        ...common,
        retention: APP_RETENTION,
        intervalMinutes: 60,
      },
      {
        id: "vm2-os",
        source: MIXED_DISKS[2].source,
        ...common,
        retention: { ...APP_RETENTION, keepLast: 30 },
      },
      {
        id: "vm2-data",
        source: MIXED_DISKS[3].source,
        backupAccount,
        backupContainer: "vm2",
        backupBlob: "vm2/data",
        intervalMinutes: 240,
        retention: { keepLast: 7, keepDaily: 7, keepWeekly: 0, keepMonthly: 0 },
      },
      { id: "vm3-os", source: MIXED_DISKS[4].source, ...common, retention: APP_RETENTION },
    ]);
  });

  test("a partial deployment-wide retention leaves the other counts to the app; an existing backup account is used", () => {
    const given = PARAMETER_CASES["an existing backup account and a partial deployment-wide retention"];
    const bodies = evaluateArmTemplate(given).outputs.DISK_REGISTRATIONS() as Record<string, Value>[];
    check(bodies);
    expect(bodies.map((b) => [b.id, b.backupAccount, b.retention])).toEqual([
      ["vm1-os", "https://bak.blob.core.windows.net", { keepLast: 30, keepMonthly: 24 }],
      ["vm1-data", "https://bak.blob.core.windows.net", { keepLast: 30, keepMonthly: 24 }],
      ["vm2-os", "https://bak.blob.core.windows.net", { keepLast: 30, keepMonthly: 24 }],
      [
        "vm2-data",
        "https://bak.blob.core.windows.net",
        { keepLast: 7, keepDaily: 7, keepWeekly: 0, keepMonthly: 0 },
      ],
      ["vm3-os", "https://bak.blob.core.windows.net", { keepLast: 30, keepMonthly: 24 }],
    ]);
  });

  test("register-disks.sh sends each body as the output has it", () => {
    const script = read("scripts/register-disks.sh");
    expect(script).toContain(`printf '%s' "$DISK_REGISTRATIONS" | jq -c '.[]'`);
    expect(script).toMatch(/-X POST "https:\/\/\$host\/api\/disks"[\s\S]*--data "\$disk"/);
  });
});

test("infra/README.md names every role the templates assign, with its documented id", () => {
  const readme = read("README.md");
  for (const id of Object.values(arm.variables!.roles as Record<string, string>)) {
    const name = DOCUMENTED_ROLES[id];
    expect({ id, row: new RegExp(`${name} \\(\`${id}\`\\)`).test(readme) }).toEqual({ id, row: true });
  }
});

test("infra/README.md's deployment example: its disks give the roles and the registration body it shows", () => {
  const readme = read("README.md");
  const param = (name: string) => JSON.parse(new RegExp(`-p ${name}='([^']+)'`).exec(readme)![1]) as Value;
  const given = { disks: param("disks"), retention: param("retention") };
  const a = evaluateArmTemplate(given);
  expect(evaluateBicepTemplate(given).outputs.DISK_REGISTRATIONS()).toEqual(a.outputs.DISK_REGISTRATIONS());
  expect(
    a.deployments.map((d) => [
      d.resourceGroup,
      d.params.storageAccountName ?? null,
      named(d.params.roleDefinitionIds),
    ]),
  ).toEqual([
    ["prod", "prodacct", ["Storage Blob Data Contributor"]],
    ["prod-vms", null, DISK_ROLES],
  ]);
  const shown = JSON.parse(/holds, for `vm1-data`:\n\n```json\n([\s\S]*?)\n```/.exec(readme)![1]) as Record<
    string,
    Value
  >;
  const body = (a.outputs.DISK_REGISTRATIONS() as Record<string, Value>[]).find((b) => b.id === "vm1-data");
  expect({ ...body, backupAccount: "https://<BACKUP_ACCOUNT>.blob.core.windows.net" }).toEqual(shown);
});
