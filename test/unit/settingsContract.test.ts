/**
 * Settings are one contract: what lib/config/settings.ts declares (SETTINGS) and reads, what the templates
 * set as app settings, and what local.settings.sample.json lists must agree, so a renamed setting
 * cannot ship half-renamed. Names outside SETTINGS are allowed only from PLATFORM below, each with
 * the reason it is not a diskdelta setting.
 */
import fs from "node:fs";
import path from "node:path";
import { loadConfig, SETTINGS } from "../../lib/config";

const ROOT = path.resolve(__dirname, "../..");
const NAMES = SETTINGS.map((s) => s.name);

/** Read by the Functions host, the SDKs or lib/telemetry.ts, not by loadConfig's SETTINGS. */
const PLATFORM: Record<string, string> = {
  AzureWebJobsStorage__accountName:
    "identity-based host storage; config.ts accepts it as a short form of __tableServiceUri (SETTINGS says so)",
  AzureWebJobsStorage__credential: "tells the Functions host to use a managed identity",
  FUNCTIONS_WORKER_RUNTIME: "the Functions host's language worker (local.settings.json; Flex sets it itself)",
  FUNCTIONS_EXTENSION_VERSION: "the Functions host version (not allowed on Flex Consumption)",
  AZURITE_ACCOUNTS: "written by lib/emulator/azurite.ts for the Azurite it starts, not read as a setting",
};

/** Settings that make sense only on a developer machine; a deployment must not set them. */
const LOCAL_ONLY = ["DISKDELTA_HOME", "DISKDELTA_EMBEDDED_PORT", "DISKDELTA_HTTP_PORT"];
/** Settings that hold a secret (a key or a connection string with one); the templates use identities. */
const SECRETS = ["AzureWebJobsStorage", "STORAGE_ACCOUNT_KEYS"];

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(full) : e.name.endsWith(".ts") ? [full] : [];
  });
}

/** `process.env.X`, `env.X`, `env["X"]` and `env?.X` in lib/. */
function envNamesReadInLib(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const file of tsFiles(path.join(ROOT, "lib"))) {
    const text = fs.readFileSync(file, "utf8");
    for (const m of text.matchAll(
      /\benv(?:\?)?(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*\])/g,
    )) {
      const name = m[1] ?? m[2];
      found.set(name, [...(found.get(name) ?? []), path.relative(ROOT, file)]);
    }
  }
  return found;
}

function templateSettings(): { arm: Map<string, string>; bicep: string[] } {
  const arm = JSON.parse(fs.readFileSync(path.join(ROOT, "infra/azuredeploy.json"), "utf8")) as {
    resources: {
      type: string;
      properties?: { siteConfig?: { appSettings: { name: string; value: string }[] } };
    }[];
  };
  const site = arm.resources.find((r) => r.type === "Microsoft.Web/sites")!;
  const bicep = fs.readFileSync(path.join(ROOT, "infra/main.bicep"), "utf8");
  const block = /appSettings: \[([\s\S]*?)\n\s*\]/.exec(bicep)?.[1] ?? "";
  return {
    arm: new Map(site.properties!.siteConfig!.appSettings.map((s) => [s.name, s.value])),
    bicep: [...block.matchAll(/\{ name: '([^']+)'/g)].map((m) => m[1]),
  };
}

describe("settings contract", () => {
  test("every name lib/ reads from the environment is in SETTINGS or a documented platform name", () => {
    const read = envNamesReadInLib();
    expect(read.size).toBeGreaterThan(5);
    for (const [name, files] of read) {
      expect({ name, files, known: NAMES.includes(name) || name in PLATFORM }).toEqual({
        name,
        files,
        known: true,
      });
    }
  });

  test("every SETTINGS name is actually read in lib/ (not only documented)", () => {
    const read = envNamesReadInLib();
    // intSetting/enumSetting receive the name as a string literal.
    const config = fs.readFileSync(path.join(ROOT, "lib/config/settings.ts"), "utf8");
    for (const name of NAMES) {
      const literalUses = config.split(`"${name}"`).length - 1; // one is the SETTINGS entry itself
      expect({ name, read: read.has(name) || literalUses >= 2 }).toEqual({ name, read: true });
    }
  });

  test("the templates set only known settings, the same ones, and no secret or local-only one", () => {
    const { arm, bicep } = templateSettings();
    expect([...arm.keys()].sort()).toEqual([...bicep].sort());
    for (const name of arm.keys()) {
      expect({ name, known: NAMES.includes(name) || name in PLATFORM }).toEqual({ name, known: true });
      expect(LOCAL_ONLY).not.toContain(name);
      expect(SECRETS).not.toContain(name);
    }
  });

  test("a setting the templates omit has a default that works in Azure", () => {
    const { arm } = templateSettings();
    const omitted = SETTINGS.filter((s) => !arm.has(s.name));
    for (const s of omitted) {
      // Without a default, a setting must be one the identity configuration makes unnecessary.
      if (/^\(unset/.test(s.default))
        expect([...SECRETS, "AzureWebJobsStorage__tableServiceUri"]).toContain(s.name);
    }
  });

  test("loadConfig accepts the templates' settings and finds identity-based storage with the client id", () => {
    const { arm } = templateSettings();
    // Template expressions are placeholders here; give each the value it evaluates to in Azure.
    const evaluated: Record<string, string> = {
      AzureWebJobsStorage__accountName: "diskdeltaappabc123",
      AzureWebJobsStorage__clientId: "11111111-2222-3333-4444-555555555555",
      DISKDELTA_SCHEDULE: "0 0 */12 * * *",
      DISKDELTA_TABLE_PREFIX: "diskdelta",
    };
    const env: NodeJS.ProcessEnv = {};
    for (const [name, value] of arm) env[name] = value.startsWith("[") ? (evaluated[name] ?? "x") : value;
    const config = loadConfig(env);
    expect(config.storage).toEqual({
      kind: "identity",
      tableServiceUri: "https://diskdeltaappabc123.table.core.windows.net",
      queueServiceUri: "https://diskdeltaappabc123.queue.core.windows.net",
      clientId: "11111111-2222-3333-4444-555555555555",
    });
    expect(config.tablePrefix).toBe("diskdelta");
  });

  test("local.settings.sample.json lists every SETTINGS name and nothing unknown", () => {
    const sample = JSON.parse(fs.readFileSync(path.join(ROOT, "local.settings.sample.json"), "utf8")) as {
      Values: Record<string, string>;
    };
    const keys = Object.keys(sample.Values);
    for (const name of NAMES) expect({ name, listed: keys.includes(name) }).toEqual({ name, listed: true });
    for (const key of keys)
      expect({ key, known: NAMES.includes(key) || key in PLATFORM }).toEqual({ key, known: true });
  });
});
