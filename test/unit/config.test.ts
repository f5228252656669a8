/**
 * loadConfig reads one validated configuration from an environment object: defaults when unset,
 * every bad value named in one ConfigError, account keys parsed without ever echoing key material,
 * and the identity form of the lineage connection.
 */
import os from "node:os";
import path from "node:path";
import { ConfigError, loadConfig, parseAccountKeys, SETTINGS } from "../../lib/config";

const MiB = 1024 * 1024;
/** Looks like a real 64-byte storage key; the tests assert it never appears in a message. */
const SECRET_KEY = Buffer.alloc(64, 7).toString("base64");

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("loadConfig accepted the environment");
}

describe("defaults", () => {
  test("an empty environment gives the documented defaults", () => {
    const config = loadConfig({});
    expect(config.storage).toBeUndefined();
    expect(config.accountKeys.size).toBe(0);
    expect(config.diffMode).toBe("auto");
    expect(config.copyMode).toBe("auto");
    expect(config.segmentBytes).toBe(128 * MiB);
    expect(config.copyConcurrency).toBe(8);
    expect(config.leaseSeconds).toBe(120);
    expect(config.retryAttempts).toBe(6);
    expect(config.retryBaseMs).toBe(250);
    expect(config.tablePrefix).toBe("diskdelta");
    expect(config.home).toBe(path.join(os.homedir(), ".diskdelta"));
  });

  test("blank values count as unset", () => {
    const config = loadConfig({
      DISKDELTA_SEGMENT_BYTES: "  ",
      DISKDELTA_DIFF_MODE: "",
      DISKDELTA_TABLE_PREFIX: " ",
    });
    expect(config.segmentBytes).toBe(128 * MiB);
    expect(config.diffMode).toBe("auto");
    expect(config.tablePrefix).toBe("diskdelta");
  });

  test("the defaults listed in SETTINGS are the ones loadConfig applies", () => {
    const config = loadConfig({});
    const documented = new Map(SETTINGS.map((s) => [s.name, s.default]));
    expect(documented.get("DISKDELTA_SEGMENT_BYTES")).toBe(String(config.segmentBytes));
    expect(documented.get("DISKDELTA_COPY_CONCURRENCY")).toBe(String(config.copyConcurrency));
    expect(documented.get("DISKDELTA_RUN_LEASE_SECONDS")).toBe(String(config.leaseSeconds));
    expect(documented.get("DISKDELTA_RETRY_ATTEMPTS")).toBe(String(config.retryAttempts));
    expect(documented.get("DISKDELTA_RETRY_BASE_MS")).toBe(String(config.retryBaseMs));
    expect(documented.get("DISKDELTA_DIFF_MODE")).toBe(config.diffMode);
    expect(documented.get("DISKDELTA_COPY_MODE")).toBe(config.copyMode);
    expect(documented.get("DISKDELTA_TABLE_PREFIX")).toBe(config.tablePrefix);
  });

  test("valid values are taken", () => {
    const config = loadConfig({
      DISKDELTA_DIFF_MODE: "compare",
      DISKDELTA_COPY_MODE: "streamed",
      DISKDELTA_SEGMENT_BYTES: String(8 * MiB),
      DISKDELTA_COPY_CONCURRENCY: "16",
      DISKDELTA_RUN_LEASE_SECONDS: "30",
      DISKDELTA_RETRY_ATTEMPTS: "2",
      DISKDELTA_RETRY_BASE_MS: "1",
      DISKDELTA_TABLE_PREFIX: "bk1",
      DISKDELTA_HOME: "/tmp/dd-home",
    });
    expect(config).toMatchObject({
      diffMode: "compare",
      copyMode: "streamed",
      segmentBytes: 8 * MiB,
      copyConcurrency: 16,
      leaseSeconds: 30,
      retryAttempts: 2,
      retryBaseMs: 1,
      tablePrefix: "bk1",
      home: "/tmp/dd-home",
    });
  });
});

describe("every bad value is named in one ConfigError", () => {
  test("all problems at once, each naming its setting", () => {
    const err = configError({
      DISKDELTA_DIFF_MODE: "fast",
      DISKDELTA_COPY_MODE: "rsync",
      DISKDELTA_SEGMENT_BYTES: "1000",
      DISKDELTA_COPY_CONCURRENCY: "0",
      DISKDELTA_RUN_LEASE_SECONDS: "2",
      DISKDELTA_RETRY_ATTEMPTS: "-1",
      DISKDELTA_RETRY_BASE_MS: "soon",
      DISKDELTA_TABLE_PREFIX: "1-bad",
      STORAGE_ACCOUNT_KEYS: "noColonHere",
      AzureWebJobsStorage: "not a connection string",
    });
    const names = [
      "DISKDELTA_DIFF_MODE",
      "DISKDELTA_COPY_MODE",
      "DISKDELTA_SEGMENT_BYTES",
      "DISKDELTA_COPY_CONCURRENCY",
      "DISKDELTA_RUN_LEASE_SECONDS",
      "DISKDELTA_RETRY_ATTEMPTS",
      "DISKDELTA_RETRY_BASE_MS",
      "DISKDELTA_TABLE_PREFIX",
      "STORAGE_ACCOUNT_KEYS",
      "AzureWebJobsStorage",
    ];
    expect(err.problems).toHaveLength(names.length);
    for (const name of names) {
      expect(err.problems.filter((p) => p.startsWith(name)).length).toBeGreaterThanOrEqual(1);
      expect(err.message).toContain(name);
    }
    expect(err.message).toMatch(/^configuration errors:\n {2}- /);
    expect(err.name).toBe("ConfigError");
  });

  test("a single problem reads as one sentence", () => {
    const err = configError({ DISKDELTA_DIFF_MODE: "fast" });
    expect(err.problems).toEqual(["DISKDELTA_DIFF_MODE=fast is not one of auto, service, compare"]);
    expect(err.message).toBe(
      "configuration error: DISKDELTA_DIFF_MODE=fast is not one of auto, service, compare",
    );
  });

  test.each([
    ["DISKDELTA_COPY_CONCURRENCY", "1.5", /not a positive integer/],
    ["DISKDELTA_COPY_CONCURRENCY", "257", /above 256/],
    ["DISKDELTA_RETRY_ATTEMPTS", "0", /not a positive integer/],
    ["DISKDELTA_RETRY_BASE_MS", "ten", /not a positive integer/],
    ["DISKDELTA_COPY_CONCURRENCY", "0x10", /not a positive integer/],
    ["DISKDELTA_SEGMENT_BYTES", "1e9", /not a positive integer/],
    ["DISKDELTA_RETRY_ATTEMPTS", " 3", /not a positive integer/],
    ["DISKDELTA_RUN_LEASE_SECONDS", "2", /below 3 seconds/],
    ["DISKDELTA_TABLE_PREFIX", "ab", /3-41 letters and digits/],
    ["DISKDELTA_TABLE_PREFIX", "has-hyphen", /3-41 letters and digits/],
    ["DISKDELTA_COPY_MODE", "SERVER", /not one of auto, streamed, server/],
  ])("%s=%s is refused", (name, value, why) => {
    const err = configError({ [name]: value });
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]).toContain(name);
    expect(err.problems[0]).toMatch(why);
  });
});

describe("DISKDELTA_SEGMENT_BYTES must be a multiple of 4 MiB", () => {
  test.each([4 * MiB, 8 * MiB, 128 * MiB, 1024 * MiB])("%i is accepted", (n) => {
    expect(loadConfig({ DISKDELTA_SEGMENT_BYTES: String(n) }).segmentBytes).toBe(n);
  });

  test.each([512, 4 * MiB - 512, 4 * MiB + 512, 150 * 1000 * 1000, 6 * MiB])("%i is refused", (n) => {
    const err = configError({ DISKDELTA_SEGMENT_BYTES: String(n) });
    expect(err.problems).toEqual([
      `DISKDELTA_SEGMENT_BYTES=${n} must be a multiple of 4 MiB (4194304) so segments align with chunks`,
    ]);
  });

  test("zero and negatives are not positive integers", () => {
    expect(configError({ DISKDELTA_SEGMENT_BYTES: "0" }).problems[0]).toMatch(/not a positive integer/);
    expect(configError({ DISKDELTA_SEGMENT_BYTES: "-4194304" }).problems[0]).toMatch(
      /not a positive integer/,
    );
  });
});

describe("STORAGE_ACCOUNT_KEYS", () => {
  test("parses account:key pairs separated by ';', tolerating spaces and empty entries", () => {
    const config = loadConfig({
      STORAGE_ACCOUNT_KEYS: ` srcacct:${SECRET_KEY} ;; bakacct:YWJjZA==;devstoreaccount1:Zm9v;`,
    });
    expect([...config.accountKeys]).toEqual([
      ["srcacct", SECRET_KEY],
      ["bakacct", "YWJjZA=="],
      ["devstoreaccount1", "Zm9v"],
    ]);
  });

  test("unset or blank gives no keys", () => {
    expect(loadConfig({ STORAGE_ACCOUNT_KEYS: "   " }).accountKeys.size).toBe(0);
    expect(parseAccountKeys(undefined, []).size).toBe(0);
  });

  test("every malformed entry is named, by position or account, and no key material is echoed", () => {
    const value = [
      `srcacct:${SECRET_KEY}`, // fine
      SECRET_KEY, // no account at all
      `:${SECRET_KEY}`, // empty account
      `Upper:${SECRET_KEY}`, // account with capitals
      `ab:${SECRET_KEY}`, // account too short
      `bakacct:${SECRET_KEY}!!`, // key not base64
      "emptykey:", // empty key
      `colons:${SECRET_KEY}:${SECRET_KEY}`, // key with a colon
    ].join(";");
    const err = configError({ STORAGE_ACCOUNT_KEYS: value });
    expect(err.problems).toEqual([
      expect.stringMatching(/^STORAGE_ACCOUNT_KEYS entry 2 has no valid account name/),
      expect.stringMatching(/^STORAGE_ACCOUNT_KEYS entry 3 has no valid account name/),
      expect.stringMatching(/^STORAGE_ACCOUNT_KEYS entry 4 has no valid account name/),
      expect.stringMatching(/^STORAGE_ACCOUNT_KEYS entry 5 has no valid account name/),
      "STORAGE_ACCOUNT_KEYS entry for bakacct has a key that is not base64",
      "STORAGE_ACCOUNT_KEYS entry for emptykey has a key that is not base64",
      "STORAGE_ACCOUNT_KEYS entry for colons has a key that is not base64",
    ]);
    // Neither the whole key nor any recognisable piece of it.
    expect(err.message).not.toContain(SECRET_KEY);
    expect(err.message).not.toContain(SECRET_KEY.slice(0, 12));
    expect(err.message).not.toContain("BwcHBwcH");
    expect(JSON.stringify(err.problems)).not.toContain("BwcH");
  });

  test("a key pasted without its account is not echoed either (the whole entry is the key)", () => {
    const err = configError({ STORAGE_ACCOUNT_KEYS: `mysecretkeyvalue123` });
    expect(err.message).not.toContain("mysecretkeyvalue123");
    expect(err.problems[0]).toMatch(/entry 1 has no valid account name/);
  });

  test("a connection string in AzureWebJobsStorage never appears in a message", () => {
    const err = configError({
      AzureWebJobsStorage: `DefaultEndpointsProtocol=https;AccountKey=${SECRET_KEY}`,
      DISKDELTA_DIFF_MODE: "bad",
    });
    expect(err.message).toContain("AzureWebJobsStorage is not a storage connection string");
    expect(err.message).not.toContain(SECRET_KEY);
  });
});

describe("lineage storage connection", () => {
  test("a connection string", () => {
    const cs = `DefaultEndpointsProtocol=https;AccountName=lin;AccountKey=${SECRET_KEY};EndpointSuffix=core.windows.net`;
    expect(loadConfig({ AzureWebJobsStorage: cs }).storage).toEqual({
      kind: "connectionString",
      connectionString: cs,
    });
    expect(loadConfig({ AzureWebJobsStorage: "UseDevelopmentStorage=true" }).storage).toEqual({
      kind: "connectionString",
      connectionString: "UseDevelopmentStorage=true",
    });
  });

  test("AzureWebJobsStorage__accountName derives the table and queue endpoints", () => {
    expect(loadConfig({ AzureWebJobsStorage__accountName: "linacct" }).storage).toEqual({
      kind: "identity",
      tableServiceUri: "https://linacct.table.core.windows.net",
      queueServiceUri: "https://linacct.queue.core.windows.net",
      clientId: undefined,
    });
  });

  test("AzureWebJobsStorage__tableServiceUri (sovereign cloud) with a user-assigned identity", () => {
    expect(
      loadConfig({
        AzureWebJobsStorage__tableServiceUri: "https://linacct.table.core.chinacloudapi.cn",
        AzureWebJobsStorage__queueServiceUri: "https://linacct.queue.core.chinacloudapi.cn",
        AzureWebJobsStorage__clientId: " 00000000-0000-0000-0000-000000000001 ",
      }).storage,
    ).toEqual({
      kind: "identity",
      tableServiceUri: "https://linacct.table.core.chinacloudapi.cn",
      queueServiceUri: "https://linacct.queue.core.chinacloudapi.cn",
      clientId: "00000000-0000-0000-0000-000000000001",
    });
  });

  test("an explicit table endpoint wins over the account name", () => {
    const storage = loadConfig({
      AzureWebJobsStorage__accountName: "linacct",
      AzureWebJobsStorage__tableServiceUri: "https://other.table.core.usgovcloudapi.net",
    }).storage;
    expect(storage).toMatchObject({
      kind: "identity",
      tableServiceUri: "https://other.table.core.usgovcloudapi.net",
    });
  });

  test("the connection string wins over the identity form", () => {
    expect(
      loadConfig({
        AzureWebJobsStorage: "UseDevelopmentStorage=true",
        AzureWebJobsStorage__accountName: "linacct",
      }).storage?.kind,
    ).toBe("connectionString");
  });

  test("a bad AzureWebJobsStorage__accountName is named as that setting", () => {
    for (const name of ["bad name", "Bad_Acct", "ab"]) {
      const err = configError({ AzureWebJobsStorage__accountName: name });
      expect(err.problems).toHaveLength(1);
      expect(err.problems[0]).toMatch(/^AzureWebJobsStorage__accountName=/);
    }
  });

  test("the queue endpoint is derived from an explicit table endpoint, as SETTINGS documents", () => {
    expect(SETTINGS.find((s) => s.name === "AzureWebJobsStorage__queueServiceUri")?.default).toMatch(
      /derived from the table endpoint/,
    );
    expect(
      loadConfig({ AzureWebJobsStorage__tableServiceUri: "https://linacct.table.core.chinacloudapi.cn" })
        .storage,
    ).toMatchObject({ queueServiceUri: "https://linacct.queue.core.chinacloudapi.cn" });
  });

  test("a table endpoint that is not a URL is named", () => {
    const err = configError({ AzureWebJobsStorage__tableServiceUri: "linacct.table" });
    expect(err.problems).toEqual(["AzureWebJobsStorage__tableServiceUri=linacct.table is not a URL"]);
  });
});
