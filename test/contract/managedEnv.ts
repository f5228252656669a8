/**
 * The managed-disk world the tests run in: the shared Azurite behind the diff fixture (which
 * answers managed-disk diffs as Azure does), the ARM fake over HTTPS with its generated
 * certificate, and engines that reach ARM through the real @azure/arm-compute client — in this
 * process (openEngine's `arm` option and the fake's credential) or in a child process
 * (DISKDELTA_ARM_ENDPOINT, NODE_EXTRA_CA_CERTS=fake.caFile, and a local managed-identity token
 * endpoint through IDENTITY_ENDPOINT/IDENTITY_HEADER, the way an App Service or Functions host
 * hands a managed identity its tokens, so the child's DefaultAzureCredential works unchanged).
 */
import crypto from "node:crypto";
import http from "node:http";
import { openEngine, type Engine } from "../../lib/compose";
import { silentLogger, type Logger } from "../../lib/core/logger";
import { startArmFake, type ArmFake, type ArmFakeOptions } from "../fixtures/armFake";
import { startDiffProxy, type DiffProxy } from "../fixtures/diffProxy";
import { testEngineEnv } from "../support/disks";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

export const MiB = 1024 * 1024;

export interface ManagedWorld {
  proxy: DiffProxy;
  arm: ArmFake;
  /** Environment of an engine on the test storage, fast ARM polling, its own lineage tables. */
  env(extra?: Record<string, string>): Record<string, string>;
  /** An engine in this process, talking to the fake through the real ARM client. */
  engine(extra?: Record<string, string>, log?: Logger): Promise<Engine>;
  /** What a child process needs on top of `env()` to reach the fake and get tokens. */
  childEnv(): Record<string, string>;
  /** A new resource group. */
  group(prefix?: string): string;
  close(): Promise<void>;
}

/** A token endpoint of the App Service managed-identity protocol (the only thing it checks is the header). */
async function startTokenEndpoint(): Promise<{ url: string; header: string; close(): Promise<void> }> {
  const header = crypto.randomBytes(16).toString("hex");
  const server = http.createServer((req, res) => {
    if (req.headers["x-identity-header"] !== header) {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        access_token: `mi.${crypto.randomBytes(12).toString("hex")}`,
        expires_on: String(Math.floor(Date.now() / 1000) + 3600),
        resource: "https://management.azure.com",
        token_type: "Bearer",
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/msi/token`,
    header,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export async function startManagedWorld(options: Partial<ArmFakeOptions> = {}): Promise<ManagedWorld> {
  const s = testStorage();
  const proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
  const arm = await startArmFake({
    proxy,
    storage: {
      blobEndpoint: `http://127.0.0.1:${s.blobPort}`,
      account: SOURCE_ACCOUNT,
      key: s.keys[SOURCE_ACCOUNT],
    },
    // Tests take several snapshots of one disk within minutes; the limit has a test of its own.
    snapshotRateLimit: false,
    lro: { completeAfterMs: 50, pollsInProgress: 1 },
    ...options,
  });
  const token = await startTokenEndpoint();
  const engines: Engine[] = [];
  const env = (extra: Record<string, string> = {}) =>
    Object.fromEntries(
      Object.entries(
        testEngineEnv({ DISKDELTA_ARM_POLL_MS: "5", DISKDELTA_RETRY_ATTEMPTS: "3", ...extra }),
      ).map(([k, v]) => [k, String(v)]),
    );
  return {
    proxy,
    arm,
    env,
    engine: async (extra = {}, log = silentLogger) => {
      const e = await openEngine(log, env(extra), {
        identity: arm.credential,
        arm: { endpoint: arm.endpoint, ca: arm.ca },
      });
      engines.push(e);
      return e;
    },
    childEnv: () => ({
      DISKDELTA_ARM_ENDPOINT: arm.endpoint,
      NODE_EXTRA_CA_CERTS: arm.caFile,
      IDENTITY_ENDPOINT: token.url,
      IDENTITY_HEADER: token.header,
    }),
    group: (prefix = "rg-") => {
      const rg = uniqueName(prefix);
      arm.createResourceGroup(rg);
      return rg;
    },
    close: async () => {
      for (const e of engines) await e.close();
      await token.close();
      await arm.close();
      await proxy.close();
    },
  };
}
