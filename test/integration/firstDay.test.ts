/**
 * A first day without surprises (issue 12 items 2-7), as a new user meets diskdelta: the compiled
 * CLI as real processes (`node dist/lib/cli/main.js`) against the shared test Azurite or the
 * embedded storage of a data folder of the test's own, and the HTTP API's handlers called with
 * real requests on the same lineage. Proves:
 *
 * 2. one data folder per user wherever a command runs; a relative DISKDELTA_HOME resolved once and
 *    shown by `diskdelta info`; a port held by diskdelta's own server of another folder named so;
 * 3. one name for each thing: the API takes back the shapes it answers and the CLI prints, the
 *    interval is set and shown everywhere, a point has one `time` in every view, a restore id of
 *    its own (`rs-`), restore and verify default to the newest point, a source protected twice is
 *    refused naming the other disk;
 * 4. a backup that finds nothing changed makes no point and pushes none out (`--force` seals one);
 * 5. a bad schedule is named in the one configuration error with the others, exit 2, from the CLI
 *    and from the host before it serves;
 * 6. no way of signing in: exit 2, one message naming the ways tried and how to use each, once;
 * 7. --json leaves stdout JSON only on every command (with -v), tables fit 100 columns and prune's
 *    columns align, points show verification and runs detection, busy names the holder in words,
 *    counts read as English, status lines every 5 s where stderr is not a terminal, -v names phases.
 */
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { HttpRequest, InvocationContext, type HttpResponseInit } from "@azure/functions";
import * as api from "../../functions/http";
import { claimRun, QUEUED_OWNER } from "../../lib/backup/claim";
import { openEngine, type Engine } from "../../lib/compose";
import { useApp } from "../../lib/compose/runtime";
import { silentLogger } from "../../lib/core/logger";
import { ensureBuilt, HOST, MAIN, ROOT } from "../support/build";
import {
  backupAccountUrl,
  createDisk,
  MiB,
  serviceClient,
  testEngineEnv,
  writeRandom,
  type TestDisk,
} from "../support/disks";
import { json, runScript, type Result } from "../support/processes";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

let scratch: string;

beforeAll(() => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-firstday-"));
});

afterAll(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

function cli(
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { cwd?: string; home?: string } = {},
): Promise<Result> {
  return runScript(MAIN, args, env, { cwd: options.cwd ?? scratch, home: options.home ?? scratch });
}

async function ok<T>(args: string[], env: NodeJS.ProcessEnv): Promise<T> {
  return json<T>(await cli([...args, "--json"], env));
}

interface DiskJson {
  id: string;
  source: string;
  backupAccount: string;
  backupContainer: string;
  backupBlob: string;
  intervalMinutes?: number;
  retention: { keepLast: number; keepDaily: number; keepWeekly: number; keepMonthly: number };
}
interface RunJson {
  id: string;
  state: string;
  detection?: string;
  restorePoint?: string;
}
interface PointJson {
  id: string;
  time: string;
  verifiedAt?: string;
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

/** A registered disk on the shared Azurite with `points` restore points, each after a change. */
async function diskWithPoints(env: NodeJS.ProcessEnv, points: number, extra: string[] = []) {
  const source = await createDisk(4 * MiB);
  const id = uniqueName("d");
  await ok(
    ["disk", "add", id, "--source", source.url, "--backup-account", backupAccountUrl(), ...extra],
    env,
  );
  const runs: RunJson[] = [];
  for (let i = 0; i < points; i++) {
    await writeRandom(source.client, (i % 8) * 512 * 1024, (i % 8) * 512 * 1024 + 64 * 1024);
    runs.push(await ok<RunJson>(["backup", id], env));
  }
  return { id, source, runs };
}

// ---------------------------------------------------------------------------------------------
// 2. The data folder

describe("2: the data folder does not depend on where you stand", () => {
  test("one default folder per user, from any working directory; a relative DISKDELTA_HOME resolved once and shown", async () => {
    const user = fs.mkdtempSync(path.join(scratch, "user-"));
    const env = { DISKDELTA_EMBEDDED_PORT: String(await freePortBase()) };
    const expected = path.join(user, ".diskdelta");
    for (const cwd of [ROOT, path.join(ROOT, "lib"), scratch]) {
      const info = json<{ home: string; homeSetting?: string }>(
        await cli(["info", "--json"], env, { cwd, home: user }),
      );
      expect([cwd, info.home, info.homeSetting]).toEqual([cwd, expected, undefined]);
    }
    const human = await cli(["info"], env, { cwd: path.join(ROOT, "lib"), home: user });
    expect(human.stdout).toContain(`${expected} (the default; DISKDELTA_HOME moves it)`);
    // A command from lib/ uses that folder, not a new ./.diskdelta there.
    const list = await cli(["disk", "list"], env, { cwd: path.join(ROOT, "lib"), home: user });
    expect(list.code).toBe(0);
    expect(fs.existsSync(path.join(expected, "accounts.json"))).toBe(true);
    expect(fs.existsSync(path.join(ROOT, "lib", ".diskdelta"))).toBe(false);

    const here = fs.mkdtempSync(path.join(scratch, "cwd-"));
    const relative = { ...env, DISKDELTA_HOME: "rel/data" };
    const info = json<{ home: string; homeSetting: string }>(
      await cli(["info", "--json"], relative, { cwd: here, home: user }),
    );
    expect(info).toMatchObject({ home: path.join(here, "rel/data"), homeSetting: "rel/data" });
    expect((await cli(["info"], relative, { cwd: here, home: user })).stdout).toContain(
      `${path.join(here, "rel/data")} (DISKDELTA_HOME=rel/data)`,
    );
  });

  test("info shows the folder's storage server; a port it holds is named as diskdelta's own in another folder's command", async () => {
    const port = String(await freePortBase());
    const a = path.join(fs.mkdtempSync(path.join(scratch, "a-")), "home");
    const b = path.join(fs.mkdtempSync(path.join(scratch, "b-")), "home");
    expect((await cli(["disk", "list"], { DISKDELTA_HOME: a, DISKDELTA_EMBEDDED_PORT: port })).code).toBe(0);
    // The server stays a few seconds after its last command: info names it.
    const info = json<{ embeddedServer?: { pid: number; blobPort: number; log: string } }>(
      await cli(["info", "--json"], { DISKDELTA_HOME: a, DISKDELTA_EMBEDDED_PORT: port }),
    );
    expect(info.embeddedServer).toMatchObject({ blobPort: Number(port), log: path.join(a, "server.log") });
    const pid = info.embeddedServer!.pid;
    expect(() => process.kill(pid, 0)).not.toThrow();
    const human = await cli(["info"], { DISKDELTA_HOME: a, DISKDELTA_EMBEDDED_PORT: port });
    expect(human.stdout).toMatch(new RegExp(`storage server +pid ${pid}, ports ${port}-${Number(port) + 2}`));

    const started = Date.now();
    const clash = await cli(["disk", "list"], { DISKDELTA_HOME: b, DISKDELTA_EMBEDDED_PORT: port });
    expect(clash.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(clash.stderr.trim().split("\n")).toHaveLength(1);
    expect(clash.stderr).toContain(
      `which diskdelta's storage server pid ${pid} of the data folder ${fs.realpathSync(a)} holds`,
    );
    expect(clash.stderr).toMatch(/DISKDELTA_EMBEDDED_PORT/);
  });
});

// ---------------------------------------------------------------------------------------------
// 3. One name for each thing (CLI and HTTP API on one lineage)

type Handler = (request: HttpRequest, context: InvocationContext) => Promise<HttpResponseInit>;

async function call(
  handler: Handler,
  init: { method?: string; params?: Record<string, string>; body?: object } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const request = new HttpRequest({
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    url: "http://localhost:7071/api/test",
    body: init.body === undefined ? undefined : { string: JSON.stringify(init.body) },
    params: init.params,
  });
  const context = new InvocationContext({
    functionName: "test",
    invocationId: "i",
    logHandler: () => undefined,
  });
  const response = await handler(request, context);
  return { status: response.status ?? 200, body: response.jsonBody as Record<string, unknown> };
}

describe("3: one name for each thing, on every interface", () => {
  let env: NodeJS.ProcessEnv;
  let engine: Engine;

  beforeAll(async () => {
    env = testEngineEnv();
    engine = await openEngine(silentLogger, env);
    useApp(engine);
  });
  afterAll(async () => {
    useApp(undefined);
    await engine.close();
  });

  test("retention and interval: the CLI sets and shows them, the API answers the same shape and takes it back", async () => {
    const source = await createDisk(1 * MiB);
    const id = uniqueName("d");
    const added = await ok<DiskJson>(
      [
        "disk",
        "add",
        id,
        "--source",
        source.url,
        "--backup-account",
        backupAccountUrl(),
        "--interval-minutes",
        "90",
        "--keep-last",
        "5",
        "--keep-weekly",
        "2",
      ],
      env,
    );
    expect(added).toMatchObject({
      id,
      intervalMinutes: 90,
      retention: { keepLast: 5, keepDaily: 0, keepWeekly: 2, keepMonthly: 12 },
    });
    const set = await ok<DiskJson>(
      ["disk", "set", id, "--interval-minutes", "120", "--keep-daily", "3"],
      env,
    );
    expect(set).toMatchObject({ intervalMinutes: 120, retention: { keepLast: 5, keepDaily: 3 } });
    const listed = (await ok<DiskJson[]>(["disk", "list"], env)).find((d) => d.id === id)!;
    expect(listed).toEqual(set);
    expect((await cli(["disk", "list"], env)).stdout).toMatch(new RegExp(`${id} .* 120 min +5/3/2/12`));

    // The API's answer has the CLI's fields, with the same values.
    const got = await call(api.getDisk, { params: { id } });
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ retention: set.retention, intervalMinutes: 120 });
    // Sending the answer's own shape back is accepted and changes nothing.
    const patched = await call(api.changeDisk, {
      method: "PATCH",
      params: { id },
      body: { intervalMinutes: got.body.intervalMinutes as number, retention: got.body.retention as object },
    });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ retention: set.retention, intervalMinutes: 120 });
    // A new disk registered over HTTP from the CLI's --json shape of this one.
    const other = await createDisk(1 * MiB);
    const twinId = uniqueName("d");
    const registered = await call(api.registerDisk, {
      body: {
        id: twinId,
        source: other.url,
        backupAccount: listed.backupAccount,
        backupContainer: listed.backupContainer,
        backupBlob: twinId,
        intervalMinutes: listed.intervalMinutes,
        retention: listed.retention,
      },
    });
    expect(registered.status).toBe(201);
    expect(registered.body).toMatchObject({ id: twinId, retention: listed.retention, intervalMinutes: 120 });
    const back = await ok<DiskJson>(["disk", "set", twinId, "--interval-minutes", "default"], env);
    expect(back.intervalMinutes).toBeUndefined();
  });

  test("a source another disk protects is refused naming it, by the CLI (exit 2) and the API (400)", async () => {
    const { id, source } = await diskWithPoints(env, 0);
    const again = await cli(
      ["disk", "add", uniqueName("d"), "--source", source.url, "--backup-account", backupAccountUrl()],
      env,
    );
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`is already protected by disk ${id}`);
    const viaApi = await call(api.registerDisk, {
      body: { id: uniqueName("d"), source: source.url, backupAccount: backupAccountUrl() },
    });
    expect(viaApi.status).toBe(400);
    expect(JSON.stringify(viaApi.body)).toContain(`already protected by disk ${id}`);
  });

  test("a point has one time in points, prune and the API; restore ids are rs-; restore and verify default to the newest", async () => {
    const { id, runs } = await diskWithPoints(env, 2);
    expect(runs.every((r) => /^r-/.test(r.id))).toBe(true);
    const points = await ok<PointJson[]>(["points", id], env);
    const plan = await ok<{ keep: Array<{ id: string; time: string }> }>(["prune", id, "--dry-run"], env);
    const viaApi = (await call(api.listPoints, { params: { id } })).body.points as PointJson[];
    for (const p of points) {
      expect(plan.keep.find((k) => k.id === p.id)?.time).toBe(p.time);
      expect(viaApi.find((a) => a.id === p.id)?.time).toBe(p.time);
    }
    const human = (await cli(["points", id], env)).stdout;
    for (const p of points) expect(human).toContain(p.time.replace(/\.\d+Z$/, "Z"));

    const newest = points[0].id;
    const file = path.join(scratch, `${id}.img`);
    const toFile = await ok<{ pointId: string }>(["restore", id, "--to-file", file], env);
    expect(toFile.pointId).toBe(newest);
    const verified = await ok<{ pointId: string; ok: boolean }>(["verify", id], env);
    expect(verified).toMatchObject({ pointId: newest, ok: true });
    const restored = await ok<{ restoreId: string; fromPoint: string; diskId: string }>(
      ["restore", id, "--name", uniqueName("r")],
      env,
    );
    expect(restored.fromPoint).toBe(newest);
    expect(restored.restoreId).toMatch(/^rs-/);
    // The restored disk's history starts with that restore, under the same id.
    const history = await ok<RunJson[]>(["runs", restored.diskId], env);
    expect(history.map((r) => r.id)).toEqual([restored.restoreId]);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Unchanged backups

test("4: after disk set --keep-last 4, no-change backups make no point and delete none; --force seals one", async () => {
  const env = testEngineEnv();
  const { id } = await diskWithPoints(env, 4);
  const before = (await ok<PointJson[]>(["points", id], env)).map((p) => p.id);
  expect(before).toHaveLength(4);
  await ok(["disk", "set", id, "--keep-last", "4", "--keep-weekly", "0", "--keep-monthly", "0"], env);
  for (let i = 0; i < 2; i++) {
    const run = await ok<RunJson>(["backup", id], env);
    expect(run.state).toBe("unchanged");
    expect(run.restorePoint).toBeUndefined();
  }
  expect((await ok<PointJson[]>(["points", id], env)).map((p) => p.id)).toEqual(before);
  const runs = await cli(["runs", id], env);
  expect(runs.stdout.split("\n").filter((l) => /\bunchanged\b.*\bunchanged\b/.test(l))).toHaveLength(2);

  // Asked for, a point is sealed anyway, and the oldest of five goes; the log counts in English.
  const forced = await cli(["backup", id, "--force", "--json", "-v"], env);
  expect(forced.code).toBe(0);
  expect((JSON.parse(forced.stdout) as RunJson).restorePoint).toBeDefined();
  expect(forced.stderr).toMatch(/: 1 restore point deleted/);
  expect(forced.stderr).not.toMatch(/\b1 (restore )?points\b/);
  const after = (await ok<PointJson[]>(["points", id], env)).map((p) => p.id);
  expect(after).toHaveLength(4);
  expect(after.slice(1)).toEqual(before.slice(0, 3));
});

// ---------------------------------------------------------------------------------------------
// 5. The schedule with the other settings

describe("5: a bad schedule is named in the one configuration error", () => {
  test("with two other bad values, every one is named once, exit 2, by the CLI and the host", async () => {
    const bad = {
      ...testEngineEnv(),
      DISKDELTA_SCHEDULE: "every 5 minutes",
      DISKDELTA_COPY_CONCURRENCY: "many",
      DISKDELTA_DIFF_MODE: "fast",
    };
    const fromCli = await cli(["disk", "list"], bad);
    const fromHost = await runScript(HOST, [], { ...bad, DISKDELTA_HTTP_PORT: String(await freePortBase()) });
    for (const r of [fromCli, fromHost]) {
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/configuration errors:/);
      for (const name of [
        "DISKDELTA_SCHEDULE",
        "DISKDELTA_COPY_CONCURRENCY=many",
        "DISKDELTA_DIFF_MODE=fast",
      ])
        expect(r.stderr.split(name)).toHaveLength(2);
      expect(r.stderr).not.toMatch(/timer backupTimer/);
    }
  });

  test("alone, the host fails at once with exit 2 before it serves", async () => {
    const started = Date.now();
    const r = await runScript(HOST, [], {
      ...testEngineEnv(),
      DISKDELTA_SCHEDULE: "0 0 25 * * *",
      DISKDELTA_HTTP_PORT: String(await freePortBase()),
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/configuration error: DISKDELTA_SCHEDULE/);
    expect(r.stdout).not.toMatch(/listening|http:\/\//i);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

// ---------------------------------------------------------------------------------------------
// 6. Signing in

test("6: no way of signing in: exit 2 and one message naming each way tried and how to use it, said once", async () => {
  const env = {
    ...testEngineEnv(),
    // Only node on PATH: no az or azd that may be logged in on the machine running the tests.
    PATH: path.dirname(process.execPath),
  };
  const started = Date.now();
  const r = await cli(
    [
      "disk",
      "add",
      "vm1-os",
      "--source",
      "https://prodacct.blob.core.windows.net/vhds/vm1-os.vhd",
      "--backup-account",
      "https://prodbackup.blob.core.windows.net",
    ],
    env,
  );
  expect(r.code).toBe(2);
  expect(Date.now() - started).toBeLessThan(30_000);
  for (const way of [
    "az login",
    "managed identity",
    "AZURE_CLIENT_ID",
    "azd auth login",
    "STORAGE_ACCOUNT_KEYS",
  ]) {
    expect([way, r.stderr.split(way).length - 1]).toEqual([way, 1]);
  }
  expect(r.stderr).toMatch(/--source: .*no way of signing in to Azure worked/);
  expect(r.stderr).toMatch(/--backup-account: .*no way of signing in to Azure worked/);
  expect(r.stderr).not.toMatch(/ChainedTokenCredential/);
});

// ---------------------------------------------------------------------------------------------
// 7. Output meant to be read or parsed

describe("7: output that is meant to be read or parsed", () => {
  test("with --json (and -v), stdout holds only JSON on every command", async () => {
    const env = testEngineEnv();
    const source = await createDisk(2 * MiB);
    await writeRandom(source.client, 0, 256 * 1024);
    const id = uniqueName("d");
    const file = path.join(scratch, `${id}.img`);
    const commands = [
      ["disk", "add", id, "--source", source.url, "--backup-account", backupAccountUrl()],
      ["disk", "list"],
      ["disk", "set", id, "--keep-last", "20"],
      ["backup", id],
      ["backup", id, "--force"],
      ["backup", id],
      ["runs", id],
      ["points", id],
      ["verify", id],
      ["restore", id, "--to-file", file],
      ["restore", id, "--name", uniqueName("r")],
      ["prune", id, "--dry-run"],
      ["prune", id],
      ["info"],
    ];
    for (const args of commands) {
      const r = await cli([...args, "--json", "-v"], env);
      expect([args.join(" "), r.code]).toEqual([args.join(" "), 0]);
      expect(() => JSON.parse(r.stdout)).not.toThrow();
      // -v's log went to stderr: a backup names its phases there.
      if (args[0] === "backup") expect(r.stderr).toMatch(/: taking a snapshot of the disk/);
    }

    // The worker streams: one JSON object per line, its log on stderr (on a data folder of its own).
    const home = path.join(fs.mkdtempSync(path.join(scratch, "w-")), "home");
    const worker = spawn(process.execPath, [MAIN, "worker", "--json", "-v"], {
      env: {
        PATH: process.env.PATH ?? "",
        HOME: scratch,
        DISKDELTA_HOME: home,
        DISKDELTA_EMBEDDED_PORT: String(await freePortBase()),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    worker.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    worker.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => worker.on("close", resolve));
    for (let waited = 0; !stdout.includes("\n") && waited < 30_000; waited += 100)
      await new Promise((resolve) => setTimeout(resolve, 100));
    worker.kill("SIGINT");
    expect(await exited).toBe(0);
    const lines = stdout.trim().split("\n");
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(JSON.parse(line)).toMatchObject({ pid: worker.pid });
    expect(stderr).toMatch(/worker stopped/);
  });

  test("tables fit 100 columns, prune's columns align, points show verification, runs show detection", async () => {
    const env = testEngineEnv();
    // Long names everywhere: a 63-character container and a long blob name.
    const container = `${uniqueName("c")}${"x".repeat(63)}`.slice(0, 63);
    const svc = serviceClient(SOURCE_ACCOUNT);
    await svc.getContainerClient(container).create();
    const blob = `${"very-long-disk-name-".repeat(4)}os.vhd`;
    const client = svc.getContainerClient(container).getPageBlobClient(blob);
    await client.create(2 * MiB);
    await writeRandom(client, 0, 128 * 1024);
    const id = `${uniqueName("disk-with-a-long-id-")}`;
    const url = `http://127.0.0.1:${testStorage().blobPort}/${SOURCE_ACCOUNT}/${container}/${blob}`;
    await ok(
      ["disk", "add", id, "--source", url, "--backup-account", backupAccountUrl(), "--backup-blob", blob],
      env,
    );
    await ok(["backup", id], env);
    await writeRandom(client, 512 * 1024, 640 * 1024);
    await ok(["backup", id], env);
    await ok(["backup", id], env); // unchanged
    await ok(["verify", id], env);

    const tables = {
      "disk list": await cli(["disk", "list"], env),
      runs: await cli(["runs", id], env),
      points: await cli(["points", id], env),
    };
    await ok(["disk", "set", id, "--keep-last", "1", "--keep-weekly", "0", "--keep-monthly", "0"], env);
    const prune = await cli(["prune", id, "--dry-run"], env);
    for (const [what, r] of Object.entries({ ...tables, prune })) {
      expect([what, r.code]).toEqual([what, 0]);
      // prune's first line is a sentence naming the disk and its policy; the rest is its table.
      const table = what === "prune" ? r.stdout.split("\n").slice(1) : r.stdout.split("\n");
      const wide = table.filter((l) => l.length > 100);
      expect([what, wide]).toEqual([what, []]);
    }
    // The disk list keeps the blob names' ends: the part that tells disks apart.
    expect(tables["disk list"].stdout).toMatch(/…[^ ]*os\.vhd /);

    const points = await ok<PointJson[]>(["points", id], env);
    const pointRows = tables.points.stdout.trimEnd().split("\n");
    const verifiedRow = pointRows.find((l) => l.startsWith(points[0].id))!;
    expect(verifiedRow).toMatch(/ ok \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(pointRows.find((l) => l.startsWith(points[1].id))).toMatch(/ -$/);
    expect(pointRows[0]).toMatch(/VERIFIED$/);

    const runRows = tables.runs.stdout.trimEnd().split("\n");
    expect(runRows[0]).toContain("DETECTED");
    const detectedAt = runRows[0].indexOf("DETECTED");
    const detected = runRows.slice(1).map((l) => l.slice(detectedAt).split(/\s+/)[0]);
    expect(detected).toEqual(["unchanged", "compare", "valid"]);

    // prune: every value starts where its header does.
    const rows = prune.stdout.trimEnd().split("\n").slice(1);
    const header = rows[0];
    const starts = ["ACTION", "RESTORE POINT", "TIME", "WHY"].map((h) => header.indexOf(h));
    expect(starts.every((s, i) => i === 0 || s > starts[i - 1])).toBe(true);
    const body = rows.slice(1);
    expect(body.filter((l) => l.startsWith("would delete"))).toHaveLength(1);
    for (const row of body)
      for (const s of starts.slice(1)) {
        expect([row, row.slice(s - 2, s)]).toEqual([row, "  "]);
        expect([row, row[s]]).not.toEqual([row, " "]);
      }
  });

  test("busy names the holder in words and when the hold ends (exit 3)", async () => {
    const env = testEngineEnv();
    const engine = await openEngine(silentLogger, env);
    try {
      for (const [owner, words] of [
        [`worker@${os.hostname()}:${process.pid}`, `a diskdelta worker (pid ${process.pid} on this host)`],
        [
          QUEUED_OWNER,
          "the backup queue (waiting for a worker to pick it up; the timer or the HTTP API started it)",
        ],
      ]) {
        const { id } = await diskWithPoints(env, 0);
        const claim = await claimRun(
          { lineage: engine.lineage, leaseSeconds: 300, owner, now: () => new Date(), log: () => undefined },
          id,
          "cli",
        );
        const r = await cli(["backup", id], env);
        expect(r.code).toBe(3);
        expect(r.stderr.trim()).toBe(
          `diskdelta: disk ${id} is busy: run ${claim.run.id} is active, held by ${words} until ${claim.run.leaseUntil} unless renewed`,
        );
        expect(r.stderr).not.toMatch(/queued:0|owner /);
      }
    } finally {
      await engine.close();
    }
  });

  test("a status line every 5 s where stderr is not a terminal; -v names each phase as it starts", async () => {
    // A blob endpoint that answers every request 300 ms late, so a small backup lasts long enough.
    const target = testStorage().blobPort;
    const slow = http.createServer((req, res) => {
      setTimeout(() => {
        const forward = http.request(
          { host: "127.0.0.1", port: target, method: req.method, path: req.url, headers: req.headers },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        forward.on("error", () => res.destroy());
        req.pipe(forward);
      }, 300);
    });
    await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
    const base = `http://127.0.0.1:${(slow.address() as net.AddressInfo).port}`;
    try {
      const env = testEngineEnv({
        DISKDELTA_COPY_CONCURRENCY: "1",
        DISKDELTA_SEGMENT_BYTES: String(4 * MiB),
      });
      const source: TestDisk = await createDisk(16 * MiB, base);
      for (let at = 0; at < 16 * MiB; at += 2 * MiB) await writeRandom(source.client, at, at + 64 * 1024);
      const id = uniqueName("d");
      await ok(["disk", "add", id, "--source", source.url, "--backup-account", backupAccountUrl(base)], env);
      const started = Date.now();
      const quiet = await cli(["backup", id, "--json"], env);
      const seconds = (Date.now() - started) / 1000;
      expect(quiet.code).toBe(0);
      const status = quiet.stderr.split("\n").filter((l) => l !== "");
      console.log(`backup through a slow endpoint: ${seconds.toFixed(1)} s, ${status.length} status lines`);
      expect(seconds).toBeGreaterThan(6);
      // Without -v the status lines are all it says: one per 5 s of work (the process's start-up
      // comes before the first), also while the seal's part reports nothing.
      expect(status.length).toBeGreaterThanOrEqual(Math.max(1, Math.floor(seconds / 5) - 1));
      expect(status.length).toBeLessThanOrEqual(Math.floor(seconds / 5));
      for (const line of status)
        expect(line).toMatch(
          /^status: (copying|sealing), \d+% of the disk \(.* of 16\.0 MiB\), .* copied.*, .*\/s, \d+:\d\d so far$/,
        );

      // -v names each phase, in order, as it starts.
      await writeRandom(source.client, 0, 64 * 1024);
      const verbose = await cli(["backup", id, "-v"], env);
      expect(verbose.code).toBe(0);
      const lines = verbose.stderr.split("\n");
      const phases = [
        "taking a snapshot of the disk",
        "listing and copying",
        "sealing the restore point",
        "recording digests and applying retention",
      ];
      const at = phases.map((p) => lines.findIndex((l) => l.includes(`: ${p}`)));
      expect(at.every((i) => i >= 0)).toBe(true);
      expect([...at].sort((x, y) => x - y)).toEqual(at);
    } finally {
      slow.close();
    }
  });
});
