/**
 * The CLI and the walkthrough as real processes (`node dist/lib/cli/main.js …`) against the shared
 * test Azurite, and against the embedded default with no AzureWebJobsStorage. Proves: --help on
 * every command; the JSON keys scripts rely on; an incremental backup copies exactly the bytes
 * written since the last one; every kind of bad input exits non-zero with a message naming the
 * problem; two backups of one disk at once give one run and one "busy" naming it (exit 3); the
 * embedded state survives between commands; and no account key ever reaches stdout or stderr.
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import type { Command } from "commander";
import { buildProgram } from "../../lib/cli/main";
import { loadConfig, SETTINGS } from "../../lib/config";
import { parseSchedule } from "../../lib/config/schedule";
import { DEFAULT_SCHEDULE } from "../../lib/config/settings";
import { scheduleOf } from "../../lib/app/api";
import { diskJson, pointJson, retentionJson, runJson } from "../../lib/app/views";
import type { DiskRecord, RestorePointRecord, RunRecord } from "../../lib/lineage/types";
import * as http from "../../functions/http";
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";
import {
  backupAccountUrl,
  createDisk,
  MiB,
  serviceClient,
  testEngineEnv,
  writeRandom,
  type TestDisk,
} from "../support/disks";
import { ensureBuilt, MAIN, ROOT, WALKTHROUGH } from "../support/build";
import { expectNoKeys, json, runScript, type Result } from "../support/processes";

let scratch: string;

/** Runs a script of dist/ with exactly `env`, in the scratch folder unless told otherwise. */
function node(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { cwd?: string; secrets?: string[] } = {},
): Promise<Result> {
  return runScript(script, args, env, {
    home: process.env.HOME ?? scratch,
    ...options,
    cwd: options.cwd ?? scratch,
  });
}

function cli(args: string[], env: NodeJS.ProcessEnv, options?: { cwd?: string; secrets?: string[] }) {
  return node(MAIN, args, env, options);
}

interface RunJson {
  id: string;
  kind: string;
  state: string;
  bytesCopied: number;
  bytesCleared: number;
  restorePoint: string;
  detection?: string;
}

beforeAll(() => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-cli-"));
});

afterAll(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

describe("--help", () => {
  test.each([
    [[], "Usage: diskdelta [options] [command]"],
    [["disk"], "Usage: diskdelta disk [options] [command]"],
    [["disk", "add"], "Usage: diskdelta disk add [options] [id]"],
    [["disk", "list"], "Usage: diskdelta disk list [options]"],
    [["backup"], "Usage: diskdelta backup [options] <id>"],
    [["runs"], "Usage: diskdelta runs [options] <id>"],
    [["points"], "Usage: diskdelta points [options] <id>"],
  ])("diskdelta %j --help exits 0 with its usage", async (command, usage) => {
    const result = await cli([...command, "--help"], testEngineEnv());
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(usage);
    expect(result.stdout).toContain("--help");
  });

  test("the package bin runs the CLI, also through a symlink as npm installs it (node_modules/.bin)", async () => {
    const link = path.join(scratch, "diskdelta");
    fs.symlinkSync(path.join(ROOT, "bin/diskdelta.js"), link);
    for (const entry of [path.join(ROOT, "bin/diskdelta.js"), link]) {
      const result = await node(entry, ["--help"], testEngineEnv());
      expect(result.code).toBe(0);
      expect(result.stdout).toContain("Usage: diskdelta [options] [command]");
    }
  });

  test("disk add --help names every option", async () => {
    const result = await cli(["disk", "add", "--help"], testEngineEnv());
    for (const option of ["--source", "--backup-account", "--backup-container", "--backup-blob"]) {
      expect(result.stdout).toContain(option);
    }
  });
});

describe("disk add, backup, disk list, runs, points", () => {
  test("a full then an incremental backup, with the JSON keys scripts rely on", async () => {
    const env = testEngineEnv();
    const disk = await createDisk(16 * MiB);
    // Random data: every written page differs from what the backup holds.
    await writeRandom(disk.client, 0, 2 * MiB);
    await writeRandom(disk.client, 5 * MiB, 6 * MiB);
    const id = uniqueName("d");

    const added = await cli(
      ["disk", "add", id, "--source", disk.url, "--backup-account", backupAccountUrl(), "--json"],
      env,
    );
    expect(json<{ id: string }>(added).id).toBe(id);

    const full = json<RunJson>(await cli(["backup", id, "--json"], env));
    for (const key of ["id", "kind", "state", "bytesCopied", "bytesCleared", "restorePoint"]) {
      expect(full).toHaveProperty(key);
    }
    expect(full).toMatchObject({ kind: "full", state: "succeeded", bytesCopied: 3 * MiB, bytesCleared: 0 });
    expect(full.restorePoint).toEqual(expect.any(String));

    // Between the backups: 256 KiB rewritten inside old data, 4 KiB of new data, 512 KiB cleared.
    await writeRandom(disk.client, 1 * MiB, 1 * MiB + 256 * 1024);
    await writeRandom(disk.client, 9 * MiB, 9 * MiB + 4096);
    await disk.client.clearPages(5 * MiB, 512 * 1024);

    const incremental = json<RunJson>(await cli(["backup", id, "--json"], env));
    expect(incremental).toMatchObject({
      kind: "incremental",
      state: "succeeded",
      bytesCopied: 256 * 1024 + 4096,
      bytesCleared: 512 * 1024,
    });
    expect(incremental.restorePoint).not.toBe(full.restorePoint);

    const disks = json<{ id: string }[]>(await cli(["disk", "list", "--json"], env));
    expect(disks.map((d) => d.id)).toEqual([id]);

    const runs = json<RunJson[]>(await cli(["runs", id, "--json"], env));
    expect(runs.map((r) => [r.id, r.kind, r.state])).toEqual([
      [incremental.id, "incremental", "succeeded"],
      [full.id, "full", "succeeded"],
    ]);
    const points = json<{ id: string; runId: string; kind: string }[]>(
      await cli(["points", id, "--json"], env),
    );
    expect(points.map((p) => [p.id, p.runId, p.kind])).toEqual([
      [incremental.restorePoint, incremental.id, "incremental"],
      [full.restorePoint, full.id, "full"],
    ]);

    // Human output names the same things.
    const human = await cli(["runs", id], env);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(incremental.id);
    expect(human.stdout).toContain(full.id);
    const list = await cli(["disk", "list"], env);
    expect(list.stdout).toContain(id);
    const one = await cli(["runs", id, "--limit", "1", "--json"], env);
    expect(json<RunJson[]>(one).map((r) => r.id)).toEqual([incremental.id]);
  });
});

describe("bad input and configuration: non-zero exit, a message naming the problem, no key", () => {
  let disk: TestDisk;
  let blockBlobUrl: string;
  const registered = uniqueName("d");
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    env = testEngineEnv();
    disk = await createDisk(4 * MiB);
    await writeRandom(disk.client, 0, 64 * 1024);
    const block = serviceClient(SOURCE_ACCOUNT)
      .getContainerClient(disk.container)
      .getBlockBlobClient("file.txt");
    await block.upload("not a disk", 10);
    blockBlobUrl = `${disk.url.slice(0, disk.url.lastIndexOf("/"))}/file.txt`;
    const added = await cli(
      ["disk", "add", registered, "--source", disk.url, "--backup-account", backupAccountUrl()],
      env,
    );
    expect(added.code).toBe(0);
  });

  const add = (id: string, source: string, extra: string[] = []) => [
    "disk",
    "add",
    id,
    "--source",
    source,
    "--backup-account",
    backupAccountUrl(),
    ...extra,
  ];

  test("an unknown disk", async () => {
    for (const command of ["backup", "runs", "points"]) {
      const result = await cli([command, "nosuchdisk"], env);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/disk nosuchdisk is not registered/);
    }
  });

  test("a malformed source URL", async () => {
    const result = await cli(add(uniqueName("d"), "not-a-url"), env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--source: "not-a-url" is not a URL/);
  });

  test("a source URL without container and blob, and a source URL carrying a SAS", async () => {
    const bare = await cli(
      add(uniqueName("d"), `http://127.0.0.1:${testStorage().blobPort}/${SOURCE_ACCOUNT}`),
      env,
    );
    expect(bare.code).toBe(2);
    expect(bare.stderr).toMatch(/must name a container and a blob/);
    const sas = await cli(add(uniqueName("d"), `${disk.url}?sv=2020&sig=abc`), env);
    expect(sas.code).toBe(2);
    expect(sas.stderr).toMatch(/must not carry a query string/);
  });

  test("a source blob that does not exist", async () => {
    const missing = disk.url.replace(/disk\.vhd$/, "missing.vhd");
    const result = await cli(add(uniqueName("d"), missing), env);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(missing);
    expect(result.stderr).toMatch(/was not found/);
  });

  test("a source that is a block blob, not a page blob", async () => {
    const result = await cli(add(uniqueName("d"), blockBlobUrl), env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/is a BlockBlob blob; diskdelta protects page blobs/);
  });

  test("a wrong account key: access denied, naming the role", async () => {
    const wrong = crypto.randomBytes(64).toString("base64");
    const keys = testStorage().keys;
    const wrongSource = `${SOURCE_ACCOUNT}:${wrong};${BACKUP_ACCOUNT}:${keys[BACKUP_ACCOUNT]};devstoreaccount1:${keys.devstoreaccount1}`;
    const added = await cli(
      add(uniqueName("d"), disk.url),
      { ...env, STORAGE_ACCOUNT_KEYS: wrongSource },
      {
        secrets: [wrong],
      },
    );
    expect(added.code).toBe(2);
    expect(added.stderr).toMatch(/--source: access denied to .*Storage Blob Data Contributor/);

    // The same at backup time, on the backup account: the run fails (exit 1) and says why.
    const wrongBackup = `${SOURCE_ACCOUNT}:${keys[SOURCE_ACCOUNT]};${BACKUP_ACCOUNT}:${wrong};devstoreaccount1:${keys.devstoreaccount1}`;
    const backup = await cli(
      ["backup", registered],
      { ...env, STORAGE_ACCOUNT_KEYS: wrongBackup },
      {
        secrets: [wrong],
      },
    );
    expect(backup.code).toBe(1);
    expect(backup.stderr).toMatch(/access denied to backup blob .*Storage Blob Data Contributor/);
    // With the right keys the next backup completes.
    const retry = json<RunJson>(await cli(["backup", registered, "--json"], env));
    expect(retry.state).toBe("succeeded");
  });

  test("a bad disk id", async () => {
    const added = await cli(add("Bad_Id", disk.url), env);
    expect(added.code).toBe(2);
    expect(added.stderr).toMatch(/disk id "Bad_Id" is not valid/);
    const backup = await cli(["backup", "Bad_Id"], env);
    expect(backup.code).toBe(2);
    expect(backup.stderr).toMatch(/disk id "Bad_Id" is not valid/);
  });

  test("a disk id that is already registered", async () => {
    const result = await cli(add(registered, disk.url, ["--backup-blob", "other"]), env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(new RegExp(`disk ${registered} is already registered`));
  });

  test("an unknown command, an unknown option, a missing argument", async () => {
    const command = await cli(["frobnicate"], env);
    expect(command.code).toBe(2);
    expect(command.stderr).toMatch(/unknown command 'frobnicate'/);
    const option = await cli(["disk", "list", "--frob"], env);
    expect(option.code).toBe(2);
    expect(option.stderr).toMatch(/unknown option '--frob'/);
    const missing = await cli(["disk", "add", "x", "--backup-account", backupAccountUrl()], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--source: is required/);
    const limit = await cli(["runs", registered, "--limit", "zero"], env);
    expect(limit.code).toBe(2);
    expect(limit.stderr).toMatch(/--limit zero is not a positive whole number/);
  });

  test("STORAGE_ACCOUNT_KEYS malformed: a ConfigError naming the entry, never echoing the key", async () => {
    const noColon = await cli(["disk", "list"], { ...env, STORAGE_ACCOUNT_KEYS: "srcacct=abc" });
    expect(noColon.code).toBe(2);
    expect(noColon.stderr).toMatch(
      /configuration error: STORAGE_ACCOUNT_KEYS entry 1 has no valid account name/,
    );
    const secret = "s3cr3t!value";
    const notBase64 = await cli(
      ["disk", "list"],
      { ...env, STORAGE_ACCOUNT_KEYS: `srcacct:${secret}` },
      {
        secrets: [secret],
      },
    );
    expect(notBase64.code).toBe(2);
    expect(notBase64.stderr).toMatch(/STORAGE_ACCOUNT_KEYS entry for srcacct has a key that is not base64/);
  });

  test("DISKDELTA_DIFF_MODE=bogus: a ConfigError naming the setting and its values", async () => {
    const result = await cli(["disk", "list"], { ...env, DISKDELTA_DIFF_MODE: "bogus" });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      /configuration error: DISKDELTA_DIFF_MODE=bogus is not one of auto, service, compare/,
    );
  });

  test("several bad settings are named in one error", async () => {
    const result = await cli(["disk", "list"], {
      ...env,
      DISKDELTA_COPY_MODE: "fast",
      DISKDELTA_SEGMENT_BYTES: "1000",
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/DISKDELTA_COPY_MODE=fast/);
    expect(result.stderr).toMatch(/DISKDELTA_SEGMENT_BYTES=1000/);
  });
});

test("two backups of one disk at once: one runs, the other exits 3 with busy naming the active run", async () => {
  const env = testEngineEnv();
  // 48 MiB of random data, so a copy lasts long enough for the second process to find it active.
  const disk = await createDisk(48 * MiB);
  await writeRandom(disk.client, 0, 48 * MiB);
  const id = uniqueName("d");
  const added = await cli(
    ["disk", "add", id, "--source", disk.url, "--backup-account", backupAccountUrl()],
    env,
  );
  expect(added.code).toBe(0);

  // Whether the two overlap depends on scheduling, so try a few times; what is asserted is the
  // property: never both failing, never anything but success or busy, and busy names the other's run.
  let sawBusy = false;
  for (let attempt = 0; attempt < 5 && !sawBusy; attempt++) {
    const results = await Promise.all([
      cli(["backup", id, "--json"], env),
      cli(["backup", id, "--json"], env),
    ]);
    const codes = results.map((r) => r.code).sort();
    expect([
      [0, 0],
      [0, 3],
    ]).toContainEqual(codes);
    if (codes[1] === 3) {
      const winner = results.find((r) => r.code === 0)!;
      const loser = results.find((r) => r.code === 3)!;
      const run = JSON.parse(winner.stdout) as RunJson;
      expect(run.state).toBe("succeeded");
      expect(loser.stdout).toBe("");
      expect(loser.stderr).toContain(`disk ${id} is busy: run ${run.id} is active`);
      sawBusy = true;
    } else {
      // They ran one after the other: give the next pair more to copy.
      await writeRandom(disk.client, 0, 32 * MiB);
    }
  }
  expect(sawBusy).toBe(true);
  // The busy process left nothing behind: every run recorded succeeded, and the disk is free.
  const runs = json<RunJson[]>(await cli(["runs", id, "--json"], env));
  expect(runs.every((r) => r.state === "succeeded")).toBe(true);
  const disks = json<{ id: string; activeRun?: string }[]>(await cli(["disk", "list", "--json"], env));
  expect(disks.find((d) => d.id === id)?.activeRun).toBeUndefined();
});

/** A base port whose next two ports are free too (the embedded blob, queue and table servers). */
async function freePortBase(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + crypto.randomInt(40000);
    if ((await free(base)) && (await free(base + 1)) && (await free(base + 2))) return base;
  }
  throw new Error("found no three consecutive free ports");
}

test("the embedded default: no AzureWebJobsStorage, state persisted under DISKDELTA_HOME between commands and walkthroughs", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-embedded-"));
  try {
    const home = path.join(dir, "home");
    const env = { DISKDELTA_HOME: home, DISKDELTA_EMBEDDED_PORT: String(await freePortBase()) };
    const run = (script: string, args: string[] = []) => node(script, args, env, { cwd: dir });

    for (let i = 0; i < 2; i++) {
      const list = await run(MAIN, ["disk", "list"]);
      expect(list.code).toBe(0);
      expect(list.stdout).toMatch(/no disks registered/);
    }

    const first = await run(WALKTHROUGH);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/embedded Azurite/);
    expect(first.stdout).toMatch(/registered disk mypremiumdisk/);
    expect(first.stdout).toMatch(/runs of mypremiumdisk, newest first \(2\)/);
    const afterFirst = json<RunJson[]>(await run(MAIN, ["runs", "mypremiumdisk", "--json"]));
    expect(afterFirst.map((r) => [r.kind, r.state])).toEqual([
      ["incremental", "succeeded"],
      ["full", "succeeded"],
    ]);
    expect(afterFirst[1].detection).toBe("valid-ranges");
    // Azurite answers diffs wrongly; the engine must have compared instead.
    expect(afterFirst[0].detection).toBe("compare");

    const second = await run(WALKTHROUGH);
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/registered already/);
    expect(second.stdout).toMatch(/runs of mypremiumdisk, newest first \(3\)/);
    const afterSecond = json<RunJson[]>(await run(MAIN, ["runs", "mypremiumdisk", "--json"]));
    expect(afterSecond).toHaveLength(3);
    expect(afterSecond[0].kind).toBe("incremental");
    expect(afterSecond.slice(1).map((r) => r.id)).toEqual(afterFirst.map((r) => r.id));

    const disks = json<{ id: string; source: string }[]>(await run(MAIN, ["disk", "list", "--json"]));
    expect(disks.map((d) => d.id)).toEqual(["mypremiumdisk"]);
    expect(disks[0].source).toContain("/mypremiumaccount/vhds/mypremiumdisk");

    // The embedded keys are random per home and live only in accounts.json (mode 0600).
    const keyFile = path.join(home, "accounts.json");
    expect(fs.statSync(keyFile).mode & 0o077).toBe(0);
    const keys = Object.values(JSON.parse(fs.readFileSync(keyFile, "utf8")) as Record<string, string>);
    for (const result of [first, second]) expectNoKeys(result, keys, "the walkthrough");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the walkthrough on the storage AzureWebJobsStorage names, with the key from its connection string", async () => {
  const env = testEngineEnv();
  // No STORAGE_ACCOUNT_KEYS: the walkthrough must use the connection string's own key for its account.
  delete env.STORAGE_ACCOUNT_KEYS;
  const first = await node(WALKTHROUGH, [], env);
  expect(first.code).toBe(0);
  expect(first.stdout).toMatch(/account devstoreaccount1 of AzureWebJobsStorage/);
  expect(first.stdout).toMatch(/runs of mypremiumdisk, newest first \(2\)/);
  const second = await node(WALKTHROUGH, [], env);
  expect(second.code).toBe(0);
  expect(second.stdout).toMatch(/runs of mypremiumdisk, newest first \(3\)/);
  expect(second.stdout).toMatch(/exactly the pages changed since the last backup/);
});

test("the walkthrough fails with the CLI's exit code and the reason on stderr", async () => {
  const result = await node(WALKTHROUGH, [], { ...testEngineEnv(), DISKDELTA_DIFF_MODE: "bogus" });
  expect(result.code).toBe(2);
  expect(result.stderr).toMatch(/diskdelta walkthrough: configuration error: DISKDELTA_DIFF_MODE=bogus/);
});

describe("the documentation matches the code", () => {
  const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");

  test("README names every setting, every command and every option", () => {
    for (const name of SETTINGS.map((s) => s.name)) {
      expect(readme).toContain(`\`${name}\``);
    }
    const walk = (command: Command, prefix: string[]): void => {
      for (const option of command.options) expect(readme).toContain(option.long!);
      for (const sub of command.commands) {
        const words = [...prefix, sub.name()];
        expect(readme).toContain(`diskdelta ${words.join(" ")}`);
        walk(sub, words);
      }
    };
    walk(buildProgram(), []);
  });

  test("README's HTTP API names every route and every field the answers carry", () => {
    for (const spec of http.functions.filter((f) => f.kind === "http"))
      for (const method of spec.methods as string[])
        expect(readme).toContain(`\`${method} /api/${spec.route}\``);
    const now = new Date().toISOString();
    const disk: DiskRecord = {
      id: "d",
      sourceUrl: "https://a.blob.core.windows.net/c/b",
      backupAccountUrl: "https://b.blob.core.windows.net",
      backupContainer: "diskdelta",
      backupBlob: "d",
      createdAt: now,
    };
    const run: RunRecord = {
      id: "r-1",
      diskId: "d",
      trigger: "cli",
      kind: "full",
      state: "succeeded",
      startedAt: now,
      updatedAt: now,
      owner: "cli@h:1",
      leaseUntil: now,
      rangesWritten: 0,
      rangesCleared: 0,
      chunksTotal: 0,
      chunksDone: 0,
      bytesPlanned: 0,
      bytesCopied: 0,
      bytesCleared: 0,
    };
    const point = {
      id: "p-1",
      diskId: "d",
      runId: "r-1",
      kind: "full",
      backupSnapshot: now,
      backupUrl: "https://b.blob.core.windows.net/diskdelta/d",
      sourceSnapshot: now,
      createdAt: now,
      size: 512,
    } as RestorePointRecord;
    const fields = [
      ...Object.keys(diskJson(disk)),
      ...Object.keys(scheduleOf(disk, point, parseSchedule(DEFAULT_SCHEDULE), new Date())),
      ...Object.keys(runJson(run)),
      ...Object.keys(pointJson(point)),
      ...Object.keys(retentionJson(disk)),
      "progress",
      "location",
      "restoreId",
    ];
    const api = readme.slice(readme.indexOf("### HTTP API"), readme.indexOf("### host.json"));
    expect(fields.filter((f) => !api.includes(`\`${f}\``))).toEqual([]);
  });

  test("README has the sections a new user and the other authors look for, and a paragraph per lib/ folder", () => {
    const headings = [...readme.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
    for (const h of [
      "Two commands",
      "Managed disks",
      "How a backup works",
      "The Functions app, locally",
      "CLI reference",
      "Settings",
      "The embedded default",
      "Credentials and signing in",
      "Deploy",
      "Reliability",
      "Development",
      "Performance",
      "Layout",
      "What is not done yet",
    ])
      expect(headings).toContain(h);
    const layout = readme.slice(
      readme.indexOf("## Layout"),
      readme.indexOf("\n## ", readme.indexOf("## Layout") + 1),
    );
    const folders = fs
      .readdirSync(path.join(ROOT, "lib"), { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
    expect(folders.filter((f) => !layout.includes(`**\`lib/${f}/\`**`))).toEqual([]);
  });

  test("local.settings.sample.json holds every setting, with the defaults, and loads", () => {
    const sample = JSON.parse(fs.readFileSync(path.join(ROOT, "local.settings.sample.json"), "utf8")) as {
      IsEncrypted: boolean;
      Values: Record<string, string>;
    };
    expect(sample.IsEncrypted).toBe(false);
    expect(Object.keys(sample.Values).sort()).toEqual(
      [...SETTINGS.map((s) => s.name), "FUNCTIONS_WORKER_RUNTIME"].sort(),
    );
    expect(sample.Values.FUNCTIONS_WORKER_RUNTIME).toBe("node");
    expect(sample.Values.AzureWebJobsStorage).toBe("UseDevelopmentStorage=true");
    // Settings whose default is a value (not a parenthesised explanation) carry that value.
    for (const s of SETTINGS.filter((s) => !s.default.startsWith("("))) {
      expect([s.name, sample.Values[s.name]]).toEqual([s.name, s.default]);
    }
    expect(() => loadConfig(sample.Values)).not.toThrow();
  });
});
