/**
 * Parses the two URL shapes diskdelta accepts, names what is wrong with any other, and decides
 * which hosts are storage endpoints at all. Path-style (emulator) URLs carry the account as the
 * first path segment (`http://127.0.0.1:10000/<account>/<container>/<blob>`); host-style (Azure)
 * URLs carry it as the first host label (`https://<account>.blob.core.windows.net/<container>/<blob>`).
 * A SAS or any query string is refused: credentials come from settings, never from URLs stored in
 * lineage. Every problem is an InputError on the field the caller names (`source`, `backupAccount`).
 *
 * Hosts (issue 13: a Storage bearer token must never reach a host that someone else chose): a URL
 * is accepted only on the blob endpoint of an Azure cloud (`<account>.blob.core.windows.net`, the
 * US Government and China clouds, `*.blob.storage.azure.net` for DNS-zone accounts and managed
 * disks), on a host listed in DISKDELTA_ALLOWED_HOSTS (custom domains), or on loopback for an
 * account whose key is configured (an emulator, reached with that key, never with a token).
 */
import { InputError } from "../core/errors";

export interface AccountLocation {
  /** Blob service URL of the account, no trailing slash. */
  serviceUrl: string;
  account: string;
  pathStyle: boolean;
}

export interface BlobLocation extends AccountLocation {
  container: string;
  blob: string;
  /** The canonical blob URL (no query). */
  url: string;
}

/** Which hosts may be storage endpoints; from the config (allowed hosts, account keys). */
export interface HostPolicy {
  allowedHosts: readonly string[];
  /** Accounts with a shared key configured: only these may be reached on loopback (an emulator). */
  hasKey(account: string): boolean;
}

/** Blob endpoint suffixes of the Azure clouds: public, US Government, China; DNS-zone accounts and managed-disk SAS hosts. */
export const CLOUD_BLOB_SUFFIXES = [
  ".blob.core.windows.net",
  ".blob.core.usgovcloudapi.net",
  ".blob.core.chinacloudapi.cn",
  ".blob.storage.azure.net",
];

const ACCOUNT = /^[a-z0-9]{3,24}$/;
const CONTAINER = /^(\$root|[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9])$/;
/** Azure's blob name rules: 1-1024 characters, no control characters; diskdelta also refuses "." and ".." segments and a backslash. */
const BLOB_MAX = 1024;

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function isPathStyleHost(host: string): boolean {
  // IP addresses, localhost and hosts without a `.blob.` label are emulator-style.
  return (
    /^(\d+\.){3}\d+$/.test(host) || host === "localhost" || host.startsWith("[") || !host.includes(".blob.")
  );
}

/**
 * Whether `host` may receive storage requests (and credentials): see the module comment. Plain
 * http is for an emulator only (loopback with its key, or a host listed on purpose): a cloud
 * endpoint must be reached over TLS.
 */
export function hostProblem(
  host: string,
  account: string,
  policy: HostPolicy,
  protocol = "https:",
): string | undefined {
  const h = host.toLowerCase();
  if (policy.allowedHosts.includes(h)) return undefined;
  if (isLoopback(h) && policy.hasKey(account)) return undefined;
  if (CLOUD_BLOB_SUFFIXES.some((s) => h.endsWith(s) && h.length > s.length)) {
    return protocol === "https:" ? undefined : `${host} is an Azure endpoint: use https, never plain http`;
  }
  return (
    `host ${host} is not a storage endpoint diskdelta talks to: use <account>.blob.core.windows.net ` +
    `(or the US Government / China cloud, or *.blob.storage.azure.net), an emulator on 127.0.0.1 whose account key is in STORAGE_ACCOUNT_KEYS, ` +
    `or list a custom domain in DISKDELTA_ALLOWED_HOSTS`
  );
}

function parse(
  raw: string,
  field: string,
  policy: HostPolicy | undefined,
): { url: URL; account: string; rest: string[]; pathStyle: boolean } {
  const bad = (message: string) => InputError.field(field, message);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw bad(
      `"${raw}" is not a URL (expected https://<account>.blob.core.windows.net/... or http://127.0.0.1:10000/<account>/...)`,
    );
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw bad(`"${raw}" must use http or https`);
  if (url.search || url.username || url.password) {
    throw bad(
      "must not carry a query string or credentials (a SAS would end up in the lineage); give keys in STORAGE_ACCOUNT_KEYS or use an identity",
    );
  }
  let segments: string[];
  try {
    // Empty segments are kept: a blob may be named "a//b", and collapsing it would back up another
    // blob. Only the empty segment before the first slash is dropped.
    segments = url.pathname.split("/").slice(1).map(decodeURIComponent);
  } catch {
    // decodeURIComponent throws a bare URIError ("URI malformed") that names neither the URL nor the setting.
    throw bad(`"${raw}" has a malformed percent-escape in its path (use %XX with two hex digits)`);
  }
  const pathStyle = isPathStyleHost(url.hostname);
  const account = pathStyle ? (segments.shift() ?? "") : url.hostname.split(".")[0];
  if (!ACCOUNT.test(account)) {
    throw bad(
      `"${raw}" does not name a valid storage account (${pathStyle ? "first path segment" : "first host label"} "${account}": 3-24 lowercase letters and digits)`,
    );
  }
  if (policy) {
    const problem = hostProblem(url.hostname, account, policy, url.protocol);
    if (problem) throw bad(problem);
  }
  return { url, account, rest: segments, pathStyle };
}

function serviceUrlOf(url: URL, account: string, pathStyle: boolean): string {
  return pathStyle ? `${url.protocol}//${url.host}/${account}` : `${url.protocol}//${url.host}`;
}

/** An account's blob service URL; with a policy, its host must be a storage endpoint. */
export function parseAccountUrl(raw: string, field = "account", policy?: HostPolicy): AccountLocation {
  const { url, account, rest, pathStyle } = parse(raw, field, policy);
  if (rest.some((s) => s !== "")) {
    throw InputError.field(field, `"${raw}" must name only the account, without a container or blob path`);
  }
  return { serviceUrl: serviceUrlOf(url, account, pathStyle), account, pathStyle };
}

/** A blob's URL; with a policy, its host must be a storage endpoint. */
export function parseBlobUrl(raw: string, field = "url", policy?: HostPolicy): BlobLocation {
  const { url, account, rest, pathStyle } = parse(raw, field, policy);
  const container = rest[0] ?? "";
  const blob = rest.slice(1).join("/");
  if (rest.length < 2 || container === "" || blob === "") {
    throw InputError.field(field, `"${raw}" must name a container and a blob: .../<container>/<blob>`);
  }
  const containerProblem = checkContainerName(container);
  if (containerProblem) throw InputError.field(field, containerProblem);
  const blobProblem = checkBlobName(blob);
  if (blobProblem) throw InputError.field(field, blobProblem);
  const serviceUrl = serviceUrlOf(url, account, pathStyle);
  return {
    serviceUrl,
    account,
    pathStyle,
    container,
    blob,
    url: `${serviceUrl}/${container}/${encodeBlobPath(blob)}`,
  };
}

export function checkContainerName(container: string): string | undefined {
  return CONTAINER.test(container)
    ? undefined
    : `"${container}" is not a valid container name (3-63 lowercase letters, digits and single hyphens)`;
}

/** Blob names as Azure takes them, minus the ones that address another blob once a URL is normalized ("..", "."). */
export function checkBlobName(blob: string): string | undefined {
  // eslint-disable-next-line no-control-regex
  if (blob.length === 0 || blob.length > BLOB_MAX || /[\u0000-\u001f\u007f\\]/.test(blob)) {
    return `"${blob}" is not a valid blob name (1-${BLOB_MAX} characters, no control characters or backslash)`;
  }
  if (blob.split("/").some((s) => s === "." || s === "..") || blob.endsWith("/") || blob.endsWith(".")) {
    return `"${blob}" is not a valid blob name: a segment "." or "..", or a trailing "/" or ".", would name another blob`;
  }
  return undefined;
}

/** A blob of an account, with both names checked. */
export function blobLocation(account: AccountLocation, container: string, blob: string): BlobLocation {
  const problem = checkContainerName(container) ?? checkBlobName(blob);
  if (problem) throw new InputError([problem]);
  return { ...account, container, blob, url: `${account.serviceUrl}/${container}/${encodeBlobPath(blob)}` };
}

function encodeBlobPath(blob: string): string {
  return blob.split("/").map(encodeURIComponent).join("/");
}

/** The account part of an account URL or blob location, for messages. */
export function accountOf(location: AccountLocation): AccountLocation {
  return { serviceUrl: location.serviceUrl, account: location.account, pathStyle: location.pathStyle };
}
