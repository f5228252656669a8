/**
 * The two URL shapes diskdelta accepts (path-style for emulators, host-style for Azure and its
 * sovereign clouds), the canonical URL it stores, and the refusals: a SAS or any query string,
 * credentials, bad account and container names, an account URL that carries a path.
 */
import { blobLocation, checkContainerName, parseAccountUrl, parseBlobUrl } from "../../lib/storage/urls";
import { InputError as UrlError } from "../../lib/core/errors";

function urlError(fn: () => unknown): UrlError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UrlError);
    return err as UrlError;
  }
  throw new Error("no UrlError");
}

describe("path-style (emulator) URLs", () => {
  test("blob URL on 127.0.0.1", () => {
    expect(parseBlobUrl("http://127.0.0.1:10000/srcacct/disks/disk.vhd")).toEqual({
      serviceUrl: "http://127.0.0.1:10000/srcacct",
      account: "srcacct",
      pathStyle: true,
      container: "disks",
      blob: "disk.vhd",
      url: "http://127.0.0.1:10000/srcacct/disks/disk.vhd",
    });
  });

  test("localhost and IPv6 hosts are path-style too", () => {
    expect(parseBlobUrl("http://localhost:10000/devstoreaccount1/c01/b").serviceUrl).toBe(
      "http://localhost:10000/devstoreaccount1",
    );
    const v6 = parseBlobUrl("http://[::1]:10000/devstoreaccount1/c01/b");
    expect(v6.pathStyle).toBe(true);
    expect(v6.account).toBe("devstoreaccount1");
    expect(v6.serviceUrl).toBe("http://[::1]:10000/devstoreaccount1");
  });

  test("a host without a .blob. label (an emulator behind a name) is path-style", () => {
    const loc = parseAccountUrl("http://azurite:10000/bakacct/");
    expect(loc).toEqual({ serviceUrl: "http://azurite:10000/bakacct", account: "bakacct", pathStyle: true });
  });

  test("account URL, with and without a trailing slash", () => {
    expect(parseAccountUrl("http://127.0.0.1:10000/bakacct")).toEqual({
      serviceUrl: "http://127.0.0.1:10000/bakacct",
      account: "bakacct",
      pathStyle: true,
    });
    expect(parseAccountUrl("http://127.0.0.1:10000/bakacct/").serviceUrl).toBe(
      "http://127.0.0.1:10000/bakacct",
    );
  });

  test("a path-style account URL with a container is refused", () => {
    expect(urlError(() => parseAccountUrl("http://127.0.0.1:10000/bakacct/diskdelta")).message).toMatch(
      /must name only the account/,
    );
  });
});

describe("host-style (Azure) URLs", () => {
  test("public cloud blob URL", () => {
    expect(parseBlobUrl("https://srcacct.blob.core.windows.net/vhds/vm1-osdisk.vhd")).toEqual({
      serviceUrl: "https://srcacct.blob.core.windows.net",
      account: "srcacct",
      pathStyle: false,
      container: "vhds",
      blob: "vm1-osdisk.vhd",
      url: "https://srcacct.blob.core.windows.net/vhds/vm1-osdisk.vhd",
    });
  });

  test.each([
    ["https://acct1.blob.core.chinacloudapi.cn", "acct1"],
    ["https://acct2.blob.core.usgovcloudapi.net", "acct2"],
    ["https://acct3.blob.core.cloudapi.de", "acct3"],
    ["https://acct4.z12.blob.storage.azure.net", "acct4"],
  ])("sovereign clouds and DNS-zone endpoints: %s", (service, account) => {
    expect(parseAccountUrl(service)).toEqual({ serviceUrl: service, account, pathStyle: false });
    expect(parseAccountUrl(`${service}/`).serviceUrl).toBe(service);
    const blob = parseBlobUrl(`${service}/c01/disk.vhd`);
    expect(blob).toMatchObject({
      account,
      container: "c01",
      blob: "disk.vhd",
      url: `${service}/c01/disk.vhd`,
    });
  });

  test("the host is case-insensitive: the account is lowercased", () => {
    expect(parseAccountUrl("https://MyAcct.blob.core.windows.net").account).toBe("myacct");
  });

  test("a port is kept in the service URL", () => {
    expect(parseAccountUrl("https://acct.blob.core.windows.net:8443").serviceUrl).toBe(
      "https://acct.blob.core.windows.net:8443",
    );
  });

  test("an account URL with a path is refused, naming the fix", () => {
    const err = urlError(() =>
      parseAccountUrl("https://acct.blob.core.windows.net/backups", "--backup-account"),
    );
    expect(err.message).toBe(
      '--backup-account: "https://acct.blob.core.windows.net/backups" must name only the account, without a container or blob path',
    );
    expect(() => parseAccountUrl("https://acct.blob.core.windows.net/backups/disk1")).toThrow(UrlError);
  });

  test("a blob URL without a blob is refused", () => {
    expect(urlError(() => parseBlobUrl("https://acct.blob.core.windows.net/vhds")).message).toMatch(
      /must name a container and a blob/,
    );
    expect(() => parseBlobUrl("https://acct.blob.core.windows.net/")).toThrow(UrlError);
    expect(() => parseBlobUrl("http://127.0.0.1:10000/acct/vhds")).toThrow(
      /must name a container and a blob/,
    );
    expect(() => parseBlobUrl("https://acct.blob.core.windows.net/vhds/")).toThrow(
      /must name a container and a blob/,
    );
  });
});

describe("blob names", () => {
  test("slashes make a virtual folder path, kept whole in the blob name", () => {
    const loc = parseBlobUrl("https://acct.blob.core.windows.net/vhds/vms/web-01/os disk.vhd");
    expect(loc.container).toBe("vhds");
    expect(loc.blob).toBe("vms/web-01/os disk.vhd");
    expect(loc.url).toBe("https://acct.blob.core.windows.net/vhds/vms/web-01/os%20disk.vhd");
  });

  test("consecutive slashes stay in the name: a//b is not the blob a/b", () => {
    const loc = parseBlobUrl("https://acct.blob.core.windows.net/vhds/a//b.vhd");
    expect(loc.blob).toBe("a//b.vhd");
    expect(loc.url).toBe("https://acct.blob.core.windows.net/vhds/a//b.vhd");
    expect(parseBlobUrl("http://127.0.0.1:10000/acct/vhds/a//b.vhd").blob).toBe("a//b.vhd");
  });

  test("spaces, percent-encoded or not, decode to the same name and encode to one canonical URL", () => {
    const raw = parseBlobUrl("http://127.0.0.1:10000/srcacct/c01/my disk (1).vhd");
    const encoded = parseBlobUrl("http://127.0.0.1:10000/srcacct/c01/my%20disk%20(1).vhd");
    expect(raw.blob).toBe("my disk (1).vhd");
    expect(encoded.blob).toBe("my disk (1).vhd");
    expect(encoded.url).toBe(raw.url);
    expect(raw.url).toBe("http://127.0.0.1:10000/srcacct/c01/my%20disk%20(1).vhd");
    // The canonical URL parses back to the same location.
    expect(parseBlobUrl(raw.url)).toEqual(raw);
  });

  test("an encoded slash and other reserved characters round-trip", () => {
    const loc = parseBlobUrl("https://acct.blob.core.windows.net/c01/a%23b%25c");
    expect(loc.blob).toBe("a#b%c");
    expect(parseBlobUrl(loc.url).blob).toBe("a#b%c");
  });

  test("blobLocation builds the canonical URL from an account, encoding the name", () => {
    const account = parseAccountUrl("https://bak.blob.core.windows.net");
    expect(blobLocation(account, "diskdelta", "folder/disk 1")).toEqual({
      ...account,
      container: "diskdelta",
      blob: "folder/disk 1",
      url: "https://bak.blob.core.windows.net/diskdelta/folder/disk%201",
    });
    expect(() => blobLocation(account, "Bad_Container", "x")).toThrow(UrlError);
  });
});

describe("refusals", () => {
  test.each([
    "https://acct.blob.core.windows.net/vhds/disk.vhd?sv=2022-11-02&sr=b&sp=r&sig=c2VjcmV0",
    "https://acct.blob.core.windows.net/vhds/disk.vhd?snapshot=2024-01-01T00:00:00.0000000Z",
    "http://127.0.0.1:10000/srcacct/vhds/disk.vhd?comp=page",
  ])("a query string (SAS) is refused and not echoed: %s", (raw) => {
    const err = urlError(() => parseBlobUrl(raw, "--source"));
    expect(err.message).toMatch(/^--source: must not carry a query string or credentials/);
    expect(err.message).toContain("STORAGE_ACCOUNT_KEYS");
    expect(err.message).not.toContain("sig=");
    expect(err.message).not.toContain("c2VjcmV0");
    expect(err.message).not.toContain("?");
  });

  test("an account URL with a SAS is refused too", () => {
    expect(() => parseAccountUrl("https://acct.blob.core.windows.net/?sv=1&sig=abc")).toThrow(
      /must not carry a query string/,
    );
  });

  test("user:password in the URL is refused and not echoed", () => {
    const err = urlError(() => parseBlobUrl("https://user:hunter2@acct.blob.core.windows.net/c01/b"));
    expect(err.message).toMatch(/must not carry a query string or credentials/);
    expect(err.message).not.toContain("hunter2");
  });

  test.each(["not a url", "acct.blob.core.windows.net/c01/b", ""])("not a URL: %j", (raw) => {
    expect(urlError(() => parseBlobUrl(raw)).message).toMatch(/is not a URL/);
  });

  test.each(["ftp://acct.blob.core.windows.net/c01/b", "file:///c01/b"])("wrong scheme: %s", (raw) => {
    expect(urlError(() => parseBlobUrl(raw)).message).toMatch(/must use http or https/);
  });

  test.each([
    ["https://ab.blob.core.windows.net/c01/b", "first host label", "ab"],
    ["https://this-has-hyphens.blob.core.windows.net/c01/b", "first host label", "this-has-hyphens"],
    [
      "https://abcdefghijklmnopqrstuvwxy.blob.core.windows.net/c01/b",
      "first host label",
      "abcdefghijklmnopqrstuvwxy",
    ],
    ["http://127.0.0.1:10000/Src_Acct/c01/b", "first path segment", "Src_Acct"],
    ["http://127.0.0.1:10000/", "first path segment", ""],
  ])("bad account name: %s", (raw, where, account) => {
    const err = urlError(() => parseBlobUrl(raw));
    expect(err.message).toContain(`${where} "${account}"`);
    expect(err.message).toMatch(/does not name a valid storage account/);
  });

  test.each(["ab", "Upper", "has--double", "-leading", "trailing-", "under_score", "a".repeat(64)])(
    "bad container name: %s",
    (container) => {
      const err = urlError(() =>
        parseBlobUrl(`https://acct.blob.core.windows.net/${container}/disk.vhd`, "--source"),
      );
      expect(err.message).toMatch(/^--source: ".*" is not a valid container name/);
      expect(checkContainerName(container)).toMatch(/is not a valid container name/);
    },
  );

  test.each(["abc", "a-b-c", "$root", "a".repeat(63), "123"])("good container name: %s", (container) => {
    expect(() => checkContainerName(container)).not.toThrow();
  });

  test("a malformed percent-escape is a UrlError naming the URL, not a bare URIError", () => {
    const err = urlError(() => parseBlobUrl("https://acct.blob.core.windows.net/c01/bad%zzname", "--source"));
    expect(err.message).toContain("--source");
  });
});
