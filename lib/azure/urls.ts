/**
 * Parses the two URL shapes diskdelta accepts and names what is wrong with any other. Path-style
 * (emulator) URLs carry the account as the first path segment
 * (`http://127.0.0.1:10000/<account>/<container>/<blob>`); host-style (Azure) URLs carry it as the
 * first host label (`https://<account>.blob.core.windows.net/<container>/<blob>`). A SAS or any
 * query string is refused: credentials come from settings, never from URLs stored in lineage.
 */

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

export class UrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UrlError";
  }
}

const ACCOUNT = /^[a-z0-9]{3,24}$/;
const CONTAINER = /^(\$root|[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9])$/;

function isPathStyleHost(host: string): boolean {
  // IP addresses, localhost and hosts without a `.blob.` label are emulator-style.
  return (
    /^(\d+\.){3}\d+$/.test(host) || host === "localhost" || host.startsWith("[") || !host.includes(".blob.")
  );
}

function parse(raw: string, what: string): { url: URL; account: string; rest: string[]; pathStyle: boolean } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UrlError(
      `${what} "${raw}" is not a URL (expected https://<account>.blob.core.windows.net/... or http://127.0.0.1:10000/<account>/...)`,
    );
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new UrlError(`${what} "${raw}" must use http or https`);
  }
  if (url.search || url.username || url.password) {
    throw new UrlError(
      `${what} must not carry a query string or credentials (a SAS would end up in the lineage); give keys in STORAGE_ACCOUNT_KEYS or use an identity`,
    );
  }
  let segments: string[];
  try {
    // Empty segments are kept: a blob may be named "a//b", and collapsing it would back up another
    // blob. Only the empty segment before the first slash is dropped.
    segments = url.pathname.split("/").slice(1).map(decodeURIComponent);
  } catch {
    // decodeURIComponent throws a bare URIError ("URI malformed") that names neither the URL nor the setting.
    throw new UrlError(
      `${what} "${raw}" has a malformed percent-escape in its path (use %XX with two hex digits)`,
    );
  }
  const pathStyle = isPathStyleHost(url.hostname);
  const account = pathStyle ? (segments.shift() ?? "") : url.hostname.split(".")[0];
  if (!ACCOUNT.test(account)) {
    throw new UrlError(
      `${what} "${raw}" does not name a valid storage account (${pathStyle ? "first path segment" : "first host label"} "${account}": 3-24 lowercase letters and digits)`,
    );
  }
  return { url, account, rest: segments, pathStyle };
}

function serviceUrlOf(url: URL, account: string, pathStyle: boolean): string {
  return pathStyle ? `${url.protocol}//${url.host}/${account}` : `${url.protocol}//${url.host}`;
}

export function parseAccountUrl(raw: string, what = "account URL"): AccountLocation {
  const { url, account, rest, pathStyle } = parse(raw, what);
  if (rest.some((s) => s !== "")) {
    throw new UrlError(`${what} "${raw}" must name only the account, without a container or blob path`);
  }
  return { serviceUrl: serviceUrlOf(url, account, pathStyle), account, pathStyle };
}

export function parseBlobUrl(raw: string, what = "blob URL"): BlobLocation {
  const { url, account, rest, pathStyle } = parse(raw, what);
  const container = rest[0] ?? "";
  const blob = rest.slice(1).join("/");
  if (rest.length < 2 || container === "" || blob === "") {
    throw new UrlError(`${what} "${raw}" must name a container and a blob: .../<container>/<blob>`);
  }
  checkContainerName(container, what);
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

export function checkContainerName(container: string, what = "container"): void {
  if (!CONTAINER.test(container)) {
    throw new UrlError(
      `${what}: "${container}" is not a valid container name (3-63 lowercase letters, digits and single hyphens)`,
    );
  }
}

export function blobLocation(account: AccountLocation, container: string, blob: string): BlobLocation {
  checkContainerName(container);
  return { ...account, container, blob, url: `${account.serviceUrl}/${container}/${encodeBlobPath(blob)}` };
}

function encodeBlobPath(blob: string): string {
  return blob.split("/").map(encodeURIComponent).join("/");
}
