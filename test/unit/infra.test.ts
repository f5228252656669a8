/**
 * Offline checks of the deployment templates. The ARM JSON (infra/azuredeploy.json) is parsed
 * fully. There is no Bicep CLI here, so infra/main.bicep gets a light structural parse: params,
 * resources, modules, outputs, app settings and role ids are read with regular expressions (one
 * declaration per line, as the file is written), which is enough to prove the two templates declare
 * the same things. Queries are compared with the files they are loaded from.
 */
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
 * (learn.microsoft.com/azure/role-based-access-control/built-in-roles, Storage and Monitor sections).
 */
const DOCUMENTED_ROLES: Record<string, string> = {
  "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
  "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
  "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
  "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
  "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
};

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
const bicepModule = read("modules/storageRoles.bicep");
const armText = JSON.stringify(arm);
const ENGINE = fs.readFileSync(path.resolve(__dirname, "../../lib/engine.ts"), "utf8");
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
    // Every table the engine opens (`${prefix}Name` in lib/engine.ts) is declared.
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

  test("DISK_REGISTRATIONS are bodies POST /api/disks accepts (every field one it knows)", () => {
    const api = fs.readFileSync(path.resolve(__dirname, "../../lib/app/api.ts"), "utf8");
    const block = /const REGISTER_FIELDS: FieldSpecs = \{([\s\S]*?)\n\};/.exec(api)![1];
    const accepted = [...block.matchAll(/^\s+(\w+): \{ type:/gm)].map((m) => m[1]);
    expect(accepted).toEqual(expect.arrayContaining(["id", "source", "backupAccount"]));
    const output = String(arm.outputs!.DISK_REGISTRATIONS.value);
    const sent = [...output.matchAll(/createObject\(((?:'\w+', [^,]+(?:, )?)+)\)/g)].flatMap((m) =>
      [...m[1].matchAll(/'(\w+)', /g)].map((k) => k[1]),
    );
    expect(sent).toEqual(
      expect.arrayContaining(["id", "source", "backupAccount", "retainLast", "intervalMinutes"]),
    );
    for (const key of sent)
      expect({ key, accepted: accepted.includes(key) }).toEqual({ key, accepted: true });
  });

  test("the retention defaults are the app's own, so a disk registered later keeps what deployed ones keep", () => {
    const defaults = Object.fromEntries(
      ["Last", "Daily", "Weekly", "Monthly"].map((k) => [k, arm.parameters[`retain${k}`].defaultValue]),
    );
    expect(defaults).toEqual({
      Last: DEFAULT_POLICY.last,
      Daily: DEFAULT_POLICY.daily,
      Weekly: DEFAULT_POLICY.weekly,
      Monthly: DEFAULT_POLICY.monthly,
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
    const moduleTypes = bicepDecls(bicepModule)
      .resources.filter((r) => !r.existing)
      .map((r) => r.type);
    for (const r of arm.resources.filter((x) => x.type === "Microsoft.Resources/deployments")) {
      expect(r.properties!.template!.resources.map((x) => x.type)).toEqual(moduleTypes);
      expect(Object.keys(r.properties!.template!.parameters).sort()).toEqual(
        bicepDecls(bicepModule)
          .params.map((p) => p.name)
          .sort(),
      );
    }
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
      expect(line).toMatch(/\/\/ (Storage|Monitoring) [A-Z]/);
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
