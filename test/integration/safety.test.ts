/**
 * Nothing lost, nothing leaked (issue 13), on the shared Azurite with the real CLI as a process and
 * the HTTP handlers called directly:
 *
 * - a restore never writes over a registered disk's source or backup blob, with or without
 *   --overwrite / "overwrite", and names that disk; a leased blob is never replaced; what an
 *   overwrite replaced is reported; the bytes written to the live disk since its last backup survive;
 * - a host that is not a storage endpoint is refused at `disk add` and POST /api/disks before any
 *   token is requested: in the engine with a TokenCredential that records its calls, and in a real
 *   CLI process with a managed-identity endpoint that records its requests (with a positive
 *   control each, so the recorder is shown to see a token request when one is made);
 * - names are validated as blob names at `disk add` (--backup-blob ../../evil and its kin);
 * - storage errors (a wrong lineage key, a wrong account key) are one readable line, no XML;
 * - unknown and prototype-polluting JSON keys are refused on every body;
 * - the embedded data folder is made 0700 with 0600 files by a CLI command.
 */
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { HttpRequest, InvocationContext, type HttpResponseInit } from "@azure/functions";
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/identity";
import * as http from "../../functions/http";
import { restoreRequest } from "../../functions/restoreQueue";
import type { App } from "../../lib/app/context";
import { backupDisk } from "../../lib/backup/run";
import { openEngine, type Engine } from "../../lib/compose";
import { useApp } from "../../lib/compose/runtime";
import { InputError } from "../../lib/core/errors";
import { silentLogger } from "../../lib/core/logger";
import { addDisk } from "../../lib/disks/register";
import { QUEUES } from "../../lib/queues/messages";
import { storageQueueSender } from "../../lib/queues/sender";
import { RESTORE_AS_TAG, RESTORE_OF_TAG } from "../../lib/restore/restore";
import { startIdentityEndpoint, type IdentityEndpoint } from "../fixtures/identityEndpoint";
import { ensureBuilt } from "../support/build";
import {
  backupAccountUrl,
  MiB,
  readImage,
  seeded,
  serviceClient,
  testEngineEnv,
  writeRandom,
  expectSameImage,
} from "../support/disks";
import { runScript, type Result } from "../support/processes";
import { BACKUP_ACCOUNT, SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

/** Records every token request; answers a token that is valid nowhere. */
class RecordingCredential implements TokenCredential {
  readonly calls: Array<string | string[]> = [];
  async getToken(scopes: string | string[], _options?: GetTokenOptions): Promise<AccessToken> {
    this.calls.push(scopes);
    return { token: "recorded.fake.token", expiresOnTimestamp: Date.now() + 3600_000 };
  }
}

type Handler = (request: HttpRequest, context: InvocationContext) => Promise<HttpResponseInit>;
interface Answer {
  status: number;
  body: Record<string, unknown>;
}

let logged: string[] = [];
function context(): InvocationContext {
  return new InvocationContext({
    functionName: "safety",
    invocationId: "inv-safety",
    logHandler: (_level, ...args) => logged.push(args.map(String).join(" ")),
  });
}

async function call(
  handler: Handler,
  init: { params?: Record<string, string>; body?: string | object; method?: string },
): Promise<Answer> {
  const body = typeof init.body === "string" ? init.body : JSON.stringify(init.body);
  const request = new HttpRequest({
    method: init.method ?? "POST",
    url: "http://localhost:7071/api/safety",
    body: { string: body },
    params: init.params,
  });
  const response = await handler(request, context());
  return { status: response.status ?? 200, body: response.jsonBody as Record<string, unknown> };
}

let engine: Engine;
let app: App;
const suffix = uniqueName("");
const queueOf = (name: string) => `${name}-${suffix}`;
let cliPath: string;

/** The real CLI on this suite's lineage tables. */
function cli(args: string[], extra: NodeJS.ProcessEnv = {}): Promise<Result> {
  const t = testStorage();
  return runScript(cliPath, args, {
    AzureWebJobsStorage: t.webJobsStorage,
    STORAGE_ACCOUNT_KEYS: t.storageAccountKeys,
    DISKDELTA_TABLE_PREFIX: engine.config.tablePrefix,
    DISKDELTA_RETRY_BASE_MS: "20",
    ...extra,
  });
}

beforeAll(async () => {
  cliPath = ensureBuilt();
  engine = await openEngine(silentLogger, testEngineEnv());
  app = { ...engine, queues: storageQueueSender((name) => engine.queueClient(queueOf(name))) };
  useApp(app);
});
afterAll(async () => {
  useApp(undefined);
  for (const q of Object.values(QUEUES)) await engine.queueClient(queueOf(q)).deleteIfExists();
  await engine.close();
});
beforeEach(() => {
  logged = [];
});

describe("a restore never writes over data it did not create", () => {
  const container = uniqueName("live");
  /** Disk `prod`: source <container>/<webOs>.vhd, backup blob `prod`. */
  const prod = uniqueName("prod");
  const webOs = uniqueName("webos");
  /** Disk `other`: source <container>/<other>.vhd, backup blob `shared`. */
  const other = uniqueName("other");
  const shared = uniqueName("shared");
  const src = (blob: string) =>
    serviceClient(SOURCE_ACCOUNT).getContainerClient(container).getPageBlobClient(blob);
  const bak = (blob: string) =>
    serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(blob);
  const urlOf = (blob: string) =>
    `http://127.0.0.1:${testStorage().blobPort}/${SOURCE_ACCOUNT}/${container}/${blob}`;

  beforeAll(async () => {
    await serviceClient(SOURCE_ACCOUNT).getContainerClient(container).create();
    for (const blob of [`${webOs}.vhd`, `${other}.vhd`]) await src(blob).create(8 * MiB);
    const rng = seeded(13);
    await writeRandom(src(`${webOs}.vhd`), 0, 2 * MiB, rng.bytes);
    await writeRandom(src(`${other}.vhd`), 0, MiB, rng.bytes);
    await addDisk(engine, { id: prod, source: urlOf(`${webOs}.vhd`), backupAccount: backupAccountUrl() });
    await addDisk(engine, {
      id: other,
      source: urlOf(`${other}.vhd`),
      backupAccount: backupAccountUrl(),
      backupBlob: shared,
    });
    expect((await backupDisk(engine, prod, { trigger: "cli" })).state).toBe("succeeded");
    expect((await backupDisk(engine, other, { trigger: "cli" })).state).toBe("succeeded");
    // Written to the live disk after its last backup: lost if anything wrote over the disk.
    await writeRandom(src(`${webOs}.vhd`), 4 * MiB, 5 * MiB, rng.bytes);
  });

  test("on the CLI: a registered disk's source or backup blob is refused with and without --overwrite, naming the disk; a leased blob is never replaced; a replaced one is reported", async () => {
    const liveBefore = await readImage(src(`${webOs}.vhd`));
    const sharedBefore = await readImage(bak(shared));

    for (const overwrite of [[], ["--overwrite"]]) {
      // The new disk blob would be prod's own source.
      const own = await cli(["restore", prod, "--name", webOs, ...overwrite]);
      expect(own.code).toBe(2);
      expect(own.stderr).toContain(`is the source of registered disk ${prod}`);
      expect(own.stderr).toMatch(/a restore never writes over a registered disk; choose another --name/);
      // The refusal never suggests --overwrite as the way out.
      expect(own.stderr).not.toMatch(/--overwrite/);
      // The new backup blob would be another disk's backup blob.
      const theirs = await cli(["restore", prod, "--name", shared, ...overwrite]);
      expect(theirs.code).toBe(2);
      expect(theirs.stderr).toContain(`is the backup blob of registered disk ${other}`);
      expect(theirs.stderr).not.toMatch(/--overwrite/);
    }
    expectSameImage(await readImage(src(`${webOs}.vhd`)), liveBefore, "the live disk");
    expectSameImage(await readImage(bak(shared)), sharedBefore, "the other disk's backup blob");
    expect(await src(`${shared}.vhd`).exists()).toBe(false);
    expect((await engine.lineage.listDisks()).map((d) => d.id)).not.toContain(webOs);

    // A restore target diskdelta made, but leased (attached somewhere): never replaced.
    const leased = uniqueName("leased");
    await src(`${leased}.vhd`).create(512, {
      metadata: { [RESTORE_AS_TAG]: "an-earlier-name", [RESTORE_OF_TAG]: `${prod}/p-x` },
    });
    const lease = src(`${leased}.vhd`).getBlobLeaseClient();
    await lease.acquireLease(-1);
    const refusedLeased = await cli(["restore", prod, "--name", leased, "--overwrite"]);
    expect(refusedLeased.code).toBe(2);
    expect(refusedLeased.stderr).toMatch(/exists and is leased \(in use as a disk\); choose another --name/);
    const leasedProps = await src(`${leased}.vhd`).getProperties();
    expect([leasedProps.contentLength, leasedProps.leaseState]).toEqual([512, "leased"]);
    expect(await bak(leased).exists()).toBe(false);
    await lease.releaseLease();

    // A blob nobody marked: never replaced, with or without --overwrite.
    const foreign = uniqueName("foreign");
    await src(`${foreign}.vhd`).create(1024);
    const refusedForeign = await cli(["restore", prod, "--name", foreign, "--overwrite"]);
    expect(refusedForeign.code).toBe(2);
    expect(refusedForeign.stderr).toMatch(/was not made by a diskdelta restore.*it is never replaced/);
    expect((await src(`${foreign}.vhd`).getProperties()).contentLength).toBe(1024);

    // An earlier restore's target: replaced only with --overwrite, and the output says what was replaced.
    const again = uniqueName("again");
    await src(`${again}.vhd`).create(512, { metadata: { [RESTORE_AS_TAG]: "an-earlier-name" } });
    const without = await cli(["restore", prod, "--name", again]);
    expect(without.code).toBe(2);
    expect(without.stderr).toMatch(
      /exists \(an earlier diskdelta restore\); choose another --name or pass --overwrite/,
    );
    const replaced = await cli(["--json", "restore", prod, "--name", again, "--overwrite"]);
    expect(replaced.code).toBe(0);
    expect(JSON.parse(replaced.stdout).replaced).toEqual([src(`${again}.vhd`).url]);
    expect(replaced.stderr).toMatch(/replacing .*\(a restore target an earlier diskdelta restore made\)/);
    const again2 = uniqueName("again");
    await src(`${again2}.vhd`).create(512, { metadata: { [RESTORE_AS_TAG]: "an-earlier-name" } });
    const human = await cli(["restore", prod, "--name", again2, "--overwrite"]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(
      new RegExp(
        `replaced +${src(`${again2}.vhd`).url.replace(/[.?]/g, "\\$&")} \\(an earlier restore's target\\)`,
      ),
    );
    // The live disk is still what it was.
    expectSameImage(await readImage(src(`${webOs}.vhd`)), liveBefore, "the live disk after every attempt");
  });

  test("over HTTP: the same refusals as 400s naming the disk, nothing queued; an overwrite says what it replaced", async () => {
    await engine.queueClient(queueOf(QUEUES.restoreRequests)).createIfNotExists();
    const queued = async () => {
      const { peekedMessageItems } = await engine
        .queueClient(queueOf(QUEUES.restoreRequests))
        .peekMessages({ numberOfMessages: 32 });
      return peekedMessageItems.length;
    };
    const before = await queued();
    const restore = (body: object) => call(http.startRestore, { params: { id: prod }, body });
    for (const overwrite of [{}, { overwrite: true }]) {
      const own = await restore({ name: webOs, ...overwrite });
      expect(own.status).toBe(400);
      expect(own.body.error).toContain(`is the source of registered disk ${prod}`);
      expect(own.body.error).toMatch(/choose another "name"/);
      expect(own.body.error).not.toMatch(/overwrite/);
      const theirs = await restore({ name: shared, ...overwrite });
      expect(theirs.status).toBe(400);
      expect(theirs.body.error).toContain(`is the backup blob of registered disk ${other}`);
    }
    const leased = uniqueName("leased");
    await src(`${leased}.vhd`).create(512, { metadata: { [RESTORE_AS_TAG]: "x" } });
    const lease = src(`${leased}.vhd`).getBlobLeaseClient();
    await lease.acquireLease(-1);
    const refusedLeased = await restore({ name: leased, overwrite: true });
    expect(refusedLeased.status).toBe(400);
    expect(refusedLeased.body.error).toMatch(/is leased/);
    await lease.releaseLease();
    expect(await queued()).toBe(before);

    // Another restore's target: 202 with "overwrite"; the worker replaces it and says so in its log.
    const again = uniqueName("again");
    await src(`${again}.vhd`).create(512, { metadata: { [RESTORE_AS_TAG]: "an-earlier-name" } });
    expect((await restore({ name: again })).status).toBe(400);
    const accepted = await restore({ name: again, overwrite: true });
    expect(accepted.status).toBe(202);
    const { peekedMessageItems } = await engine
      .queueClient(queueOf(QUEUES.restoreRequests))
      .peekMessages({ numberOfMessages: 32 });
    const message = peekedMessageItems
      .map((m) => m.messageText)
      .find((t) => JSON.parse(Buffer.from(t, "base64").toString()).requestId === accepted.body.requestId);
    await restoreRequest(message!, context());
    expect(logged.join("\n")).toContain(`replacing ${src(`${again}.vhd`).url}`);
    expect(await engine.lineage.getDisk(again)).toBeDefined();
  });
});

describe("storage hosts are storage hosts: refused before any token is requested", () => {
  /** Refused hosts, and how the refusal reads when each is given as a disk's source. */
  const HOST_REFUSED =
    /host .* is not a storage endpoint diskdelta talks to: use <account>\.blob\.core\.windows\.net .*DISKDELTA_ALLOWED_HOSTS/;
  const EVIL: Array<[string, RegExp]> = [
    ["https://acct.blob.core.windows.net.attacker.io/vhds/b.vhd", HOST_REFUSED],
    ["https://acct.blob.core.windows.net.attacker.io:443/vhds/b.vhd", HOST_REFUSED],
    ["https://attacker.io/acct/vhds/b.vhd", HOST_REFUSED],
    ["https://acctblob.core.windows.net/vhds/b.vhd", HOST_REFUSED],
    ["https://acct.blob.core.windows.net.evil/vhds/b.vhd", HOST_REFUSED],
    ["https://acct.blob.core.windows.net%2eattacker.io/vhds/b.vhd", HOST_REFUSED],
    ["https://acct.BLOB.core.windows.net.ATTACKER.io/vhds/b.vhd", HOST_REFUSED],
    ["https://acct.blob.core.windows.net./vhds/b.vhd", HOST_REFUSED],
    // The storage suffix only in the fragment or the credentials part of the URL.
    ["https://evil.io/acct/vhds/b.vhd#.blob.core.windows.net", HOST_REFUSED],
    ["https://acct.blob.core.windows.net@evil.io/vhds/b.vhd", /must not carry a query string or credentials/],
    // Loopback without a configured account key: an emulator is reached with its key, never a token.
    ["http://127.0.0.1:10000/nokeyacct/vhds/b.vhd", HOST_REFUSED],
    // An Azure endpoint over plain http.
    ["http://acct.blob.core.windows.net/vhds/b.vhd", /is an Azure endpoint: use https, never plain http/],
  ];
  const accountOf = (blobUrl: string) => blobUrl.replace(/\/vhds\/b\.vhd.*$/, "");

  test("engine and HTTP: a TokenCredential that records its calls is never called for a refused host; it is for an allowed one", async () => {
    const identity = new RecordingCredential();
    const recorded = await openEngine(silentLogger, testEngineEnv({ DISKDELTA_RETRY_ATTEMPTS: "1" }), {
      identity,
    });
    try {
      const goodSource = `http://127.0.0.1:${testStorage().blobPort}/${SOURCE_ACCOUNT}/nosuch/b.vhd`;
      for (const [evil, why] of EVIL) {
        // As a source (the backup account is an emulator reached with its key).
        const asSource = addDisk(recorded, {
          id: uniqueName("evil"),
          source: evil,
          backupAccount: backupAccountUrl(),
        });
        await expect(asSource).rejects.toThrow(InputError);
        await expect(asSource).rejects.toThrow(new RegExp(`^source: .*${why.source}`));
        // As the backup account (the source is an emulator blob reached with its key).
        const asBackup = addDisk(recorded, {
          id: uniqueName("evil"),
          source: goodSource,
          backupAccount: accountOf(evil),
        });
        await expect(asBackup).rejects.toThrow(/backupAccount: /);
      }
      // The same through POST /api/disks, with this engine's credentials as the app.
      useApp(recorded);
      for (const [evil, why] of EVIL) {
        const answer = await call(http.registerDisk, {
          body: { id: uniqueName("evil"), source: evil, backupAccount: accountOf(EVIL[0][0]) },
        });
        expect(answer.status).toBe(400);
        expect(answer.body.error).toMatch(new RegExp(`"source": .*${why.source}`));
        expect(answer.body.error).toMatch(/"backupAccount": host .* is not a storage endpoint/);
      }
      expect(identity.calls).toEqual([]);
      expect(await recorded.lineage.listDisks()).toEqual([]);
    } finally {
      useApp(app);
      await recorded.close();
    }

    // Positive control: an allowed host without a key is reached with the identity, so the recorder sees it.
    const control = new RecordingCredential();
    const allowed = await openEngine(
      silentLogger,
      testEngineEnv({ DISKDELTA_ALLOWED_HOSTS: "acct.blob.example.test", DISKDELTA_RETRY_ATTEMPTS: "1" }),
      { identity: control },
    );
    try {
      await expect(
        addDisk(allowed, {
          id: uniqueName("ok"),
          source: "https://acct.blob.example.test/vhds/b.vhd",
          backupAccount: backupAccountUrl(),
        }),
      ).rejects.toThrow(/cannot reach https:\/\/acct\.blob\.example\.test\/vhds\/b\.vhd: ENOTFOUND/);
      expect(control.calls.flat()).toEqual(["https://storage.azure.com/.default"]);
    } finally {
      await allowed.close();
    }
  });

  describe("a real CLI process signed in with a managed identity", () => {
    let endpoint: IdentityEndpoint;
    beforeAll(async () => {
      endpoint = await startIdentityEndpoint();
    });
    afterAll(() => endpoint.close());

    test("asks its identity endpoint for no token when `disk add` names a refused host, and for one when the host is allowed", async () => {
      // No STORAGE_ACCOUNT_KEYS entry for the hosts involved: a token would be the only way in.
      for (const [evil] of EVIL.slice(0, 4)) {
        const r = await cli(
          ["disk", "add", uniqueName("evil"), "--source", evil, "--backup-account", backupAccountUrl()],
          endpoint.env,
        );
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(/--source: host .* is not a storage endpoint diskdelta talks to/);
        expect(r.stderr).toMatch(/DISKDELTA_ALLOWED_HOSTS/);
      }
      const asBackup = await cli(
        [
          "disk",
          "add",
          uniqueName("evil"),
          "--source",
          EVIL[0][0],
          "--backup-account",
          accountOf(EVIL[0][0]),
        ],
        endpoint.env,
      );
      expect(asBackup.code).toBe(2);
      expect(asBackup.stderr).toMatch(
        /--backup-account: host acct\.blob\.core\.windows\.net\.attacker\.io is not/,
      );
      expect(endpoint.requests).toEqual([]);

      const control = await cli(
        [
          "disk",
          "add",
          uniqueName("ok"),
          "--source",
          "https://acct.blob.example.test/vhds/b.vhd",
          "--backup-account",
          backupAccountUrl(),
        ],
        { ...endpoint.env, DISKDELTA_ALLOWED_HOSTS: "acct.blob.example.test", DISKDELTA_RETRY_ATTEMPTS: "1" },
      );
      expect(control.code).toBe(2);
      expect(control.stderr).toMatch(/cannot reach .*ENOTFOUND/);
      expect(endpoint.requests.map((r) => r.resource)).toContain("https://storage.azure.com");
    });
  });
});

describe("smaller items", () => {
  test("disk add validates names as blob names: --backup-blob ../../evil and its kin are refused, nothing registered", async () => {
    const source = uniqueName("names");
    await serviceClient(SOURCE_ACCOUNT).getContainerClient(source).create();
    await serviceClient(SOURCE_ACCOUNT).getContainerClient(source).getPageBlobClient("d.vhd").create(MiB);
    const url = `http://127.0.0.1:${testStorage().blobPort}/${SOURCE_ACCOUNT}/${source}/d.vhd`;
    const id = uniqueName("n");
    const evil = await cli([
      "disk",
      "add",
      id,
      "--source",
      url,
      "--backup-account",
      backupAccountUrl(),
      "--backup-blob",
      "../../evil",
    ]);
    expect(evil.code).toBe(2);
    expect(evil.stderr).toBe(
      `diskdelta: --backup-blob: "../../evil" is not a valid blob name: a segment "." or "..", or a trailing "/" or ".", would name another blob\n`,
    );
    for (const bad of [
      "a/../b",
      "./x",
      "x/.",
      "trailing/",
      "back\\slash",
      "ctl\u0001char",
      "x".repeat(1025),
    ]) {
      await expect(
        addDisk(engine, { id, source: url, backupAccount: backupAccountUrl(), backupBlob: bad }),
      ).rejects.toThrow(/^backupBlob: .* is not a valid blob name/);
    }
    const container = await cli([
      "disk",
      "add",
      id,
      "--source",
      url,
      "--backup-account",
      backupAccountUrl(),
      "--backup-container",
      "../x",
    ]);
    expect(container.code).toBe(2);
    expect(container.stderr).toMatch(/--backup-container: "\.\.\/x" is not a valid container name/);
    expect(await engine.lineage.getDisk(id)).toBeUndefined();
    expect(
      await serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient("evil").exists(),
    ).toBe(false);
  });

  test("storage errors are one readable line: a wrong lineage key, a wrong account key", async () => {
    const t = testStorage();
    const wrong = crypto.randomBytes(64).toString("base64");
    const oneLine = (r: Result) => {
      expect(r.code).not.toBe(0);
      expect(r.stderr.split("\n").filter(Boolean)).toHaveLength(1);
      expect(r.stderr).not.toMatch(/<\?xml|<Error>|<Code>|odata\.error|RequestId|\{"/);
      expect(r.stderr).not.toContain(wrong);
    };
    const badLineage = await cli(["disk", "list"], {
      AzureWebJobsStorage: t.webJobsStorage.replace(/AccountKey=[^;]+/, `AccountKey=${wrong}`),
      DISKDELTA_RETRY_ATTEMPTS: "1",
    });
    oneLine(badLineage);
    expect(badLineage.stderr).toMatch(
      /^diskdelta: the lineage storage refused access while opening its tables \(\w+\): check the key in AzureWebJobsStorage/,
    );

    const source = uniqueName("keys");
    await serviceClient(SOURCE_ACCOUNT).getContainerClient(source).create();
    await serviceClient(SOURCE_ACCOUNT).getContainerClient(source).getPageBlobClient("d.vhd").create(MiB);
    const url = `http://127.0.0.1:${t.blobPort}/${SOURCE_ACCOUNT}/${source}/d.vhd`;
    const badKeys = {
      STORAGE_ACCOUNT_KEYS: t.storageAccountKeys.replace(/srcacct:[^;]+/, `srcacct:${wrong}`),
      DISKDELTA_RETRY_ATTEMPTS: "1",
    };
    const add = await cli(
      ["disk", "add", uniqueName("k"), "--source", url, "--backup-account", backupAccountUrl()],
      badKeys,
    );
    oneLine(add);
    expect(add.stderr).toMatch(
      /--source: access denied to .*d\.vhd \(\w+\): .*STORAGE_ACCOUNT_KEYS \(if a key is given there, check it\)/,
    );
    const id = uniqueName("k");
    expect(
      (await cli(["disk", "add", id, "--source", url, "--backup-account", backupAccountUrl()])).code,
    ).toBe(0);
    const backup = await cli(["backup", id], badKeys);
    oneLine(backup);
    expect(backup.stderr).toMatch(new RegExp(`access denied to disk ${id} .*check it`));
  });

  test("unknown and prototype-polluting JSON keys are refused on every body", async () => {
    const id = uniqueName("json");
    const container = uniqueName("json");
    await serviceClient(SOURCE_ACCOUNT).getContainerClient(container).create();
    await serviceClient(SOURCE_ACCOUNT).getContainerClient(container).getPageBlobClient("d.vhd").create(MiB);
    await addDisk(engine, {
      id,
      source: `http://127.0.0.1:${testStorage().blobPort}/${SOURCE_ACCOUNT}/${container}/d.vhd`,
      backupAccount: backupAccountUrl(),
    });
    const cases: Array<[Handler, Record<string, string> | undefined, string, RegExp]> = [
      [
        http.registerDisk,
        undefined,
        '{"id":"x","source":"s","backupAccount":"b","__proto__":{"isAdmin":true}}',
        /"__proto__": is not allowed/,
      ],
      [
        http.registerDisk,
        undefined,
        '{"id":"x","source":"s","backupAccount":"b","retention":{"__proto__":{"keepLast":1}}}',
        /"retention.__proto__": is not allowed/,
      ],
      [
        http.registerDisk,
        undefined,
        '{"id":"x","source":"s","backupAccount":"b","constructor":{"prototype":{}}}',
        /"constructor": is not allowed/,
      ],
      [
        http.registerDisk,
        undefined,
        '{"id":"x","source":"s","backupAccount":"b","backupblob":"y"}',
        /"backupblob": is not a field here/,
      ],
      [http.changeDisk, { id }, '{"retention":{"prototype":1}}', /"retention.prototype": is not allowed/],
      [http.changeDisk, { id }, '{"intervalMinutes":60,"colour":"red"}', /"colour": is not a field here/],
      [http.startBackup, { id }, '{"__proto__":{"force":true}}', /"__proto__": is not allowed/],
      [http.startBackup, { id }, '{"forced":true}', /"forced": is not a field here/],
      [http.startRestore, { id }, '{"constructor":{}}', /"constructor": is not allowed/],
      [http.startRestore, { id }, '{"overwrit":true}', /"overwrit": is not a field here/],
    ];
    for (const [handler, params, body, expected] of cases) {
      const answer = await call(handler, {
        params,
        body,
        method: handler === http.changeDisk ? "PATCH" : "POST",
      });
      expect({ status: answer.status, error: answer.body.error }).toEqual({
        status: 400,
        error: expect.stringMatching(expected),
      });
    }
    // Nothing reached a prototype.
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
    expect(({} as Record<string, unknown>).force).toBeUndefined();
  });

  test("a CLI command makes the embedded data folder 0700 and its files 0600, however loose it was", async () => {
    const home = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "diskdelta-safety-")), "home");
    fs.mkdirSync(path.join(home, "azurite"), { recursive: true });
    fs.chmodSync(home, 0o777);
    fs.chmodSync(path.join(home, "azurite"), 0o777);
    fs.writeFileSync(path.join(home, "notes.txt"), "x");
    fs.chmodSync(path.join(home, "notes.txt"), 0o666);
    const port = await freePortBase();
    try {
      const r = await runScript(cliPath, ["disk", "list"], {
        DISKDELTA_HOME: home,
        DISKDELTA_EMBEDDED_PORT: String(port),
      });
      expect([r.code, r.stderr]).toEqual([0, expect.any(String)]);
      const loose: string[] = [];
      const walk = (dir: string) => {
        if ((fs.statSync(dir).mode & 0o777) !== 0o700) loose.push(dir);
        for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
          const full = path.join(dir, e.name);
          if (e.isDirectory()) walk(full);
          // Files at the top (keys, locks, notes) are the folder's own; Azurite's are checked by the embedded suite.
          else if (e.isFile() && dir === home && (fs.statSync(full).mode & 0o777) !== 0o600) loose.push(full);
        }
      };
      walk(home);
      expect(loose).toEqual([]);
      expect(fs.existsSync(path.join(home, "accounts.json"))).toBe(true);
    } finally {
      await stopServers(home);
      fs.rmSync(path.dirname(home), { recursive: true, force: true });
    }
  });
});

/** A base port whose next two ports are free too (blob, queue, table of the embedded storage). */
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

/** The embedded server our command started for `home` leaves after its idle time; wait for it, then make sure. */
async function stopServers(home: string): Promise<void> {
  const servers = () =>
    spawnSync("pgrep", ["-f", home], { encoding: "utf8" })
      .stdout.split("\n")
      .filter(Boolean)
      .map(Number)
      .filter((pid) => pid !== process.pid);
  for (let i = 0; i < 100 && servers().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  for (const pid of servers()) process.kill(pid, "SIGTERM");
}
