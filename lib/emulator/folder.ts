/**
 * The data folder of the embedded storage (DISKDELTA_HOME): where its files live and who may read
 * them. Guarantees: the folder is 0700 and the files diskdelta keeps at its top 0600 every time a
 * process opens it, even when it already existed with looser modes (a folder made as 0777 by hand
 * or by an older diskdelta); the storage server tightens the whole tree once per start, under its
 * lock, and runs with umask 077 so that everything Azurite writes afterwards is private too.
 * Symbolic links inside the folder are never followed: tightening stays inside the folder.
 *
 * The accounts' keys are created only by the storage server, under its lock (lock.ts), so two
 * processes can never create two different sets; they are written whole (temporary file, then
 * rename), so a reader never sees half a file.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export const EMBEDDED_ACCOUNTS = ["mypremiumaccount", "mybackupstdaccount"];

export const PRIVATE_DIR = 0o700;
export const PRIVATE_FILE = 0o600;

export interface FolderPaths {
  home: string;
  keys: string;
  /** Azurite's own data. */
  azurite: string;
  /** The server's lock epochs (lock.ts). */
  locks: string;
  /** What the storage servers say (start, stop, why they failed). */
  log: string;
}

export function folderPaths(home: string): FolderPaths {
  return {
    home,
    keys: path.join(home, "accounts.json"),
    azurite: path.join(home, "azurite"),
    locks: path.join(home, "server"),
    log: path.join(home, "server.log"),
  };
}

function ignoreVanished(err: unknown): void {
  // The server renames and removes its files while a client tightens the folder's top level.
  if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
}

function tightenEntries(dir: string, recursive: boolean): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    ignoreVanished(err);
    return;
  }
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    try {
      if (entry.isDirectory()) {
        fs.chmodSync(full, PRIVATE_DIR);
        if (recursive) tightenEntries(full, true);
      } else if (entry.isFile()) {
        fs.chmodSync(full, PRIVATE_FILE);
      }
      // Symbolic links, sockets, FIFOs: left alone (chmod would follow a link out of the folder).
    } catch (err) {
      ignoreVanished(err);
    }
  }
}

/**
 * Creates the folder when missing and makes it private. A client tightens the top level only (the
 * folder, accounts.json, the log, the lock folder: cheap on every command); `recursive` is the
 * server's once-per-start walk over Azurite's data, which can hold thousands of extent files.
 * Returns the folder's real path, the one name every process of this folder agrees on.
 */
export function openDataFolder(home: string, recursive = false): string {
  const resolved = path.resolve(home);
  try {
    fs.mkdirSync(resolved, { recursive: true, mode: PRIVATE_DIR });
    // mkdir's mode is masked by the umask and leaves an existing folder as it was: set it.
    fs.chmodSync(resolved, PRIVATE_DIR);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(
      `cannot use the data folder ${resolved} (${e.code ?? e.message}); set DISKDELTA_HOME to a folder of yours`,
    );
  }
  tightenEntries(resolved, recursive);
  return fs.realpathSync(resolved);
}

/** Writes a whole file privately: a reader sees the old content or the new, never a part. */
export function writePrivate(file: string, content: string): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`;
  fs.writeFileSync(tmp, content, { mode: PRIVATE_FILE, flag: "wx" });
  fs.renameSync(tmp, file);
}

function readKeyFile(file: string): Record<string, string> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    ignoreVanished(err);
    return undefined;
  }
  try {
    return JSON.parse(text) as Record<string, string>;
  } catch {
    throw new Error(`${file} is not valid JSON; remove it and the data under ${path.dirname(file)}`);
  }
}

/** The storage server's: the keys of the embedded accounts, created where missing. */
export function loadOrCreateKeys(home: string): Record<string, string> {
  const file = folderPaths(home).keys;
  const keys = readKeyFile(file) ?? {};
  let changed = false;
  for (const account of EMBEDDED_ACCOUNTS) {
    if (!keys[account]) {
      keys[account] = crypto.randomBytes(64).toString("base64");
      changed = true;
    }
  }
  if (changed) writePrivate(file, JSON.stringify(keys, null, 2));
  return keys;
}

/** A client's: the keys the running server serves (it created them before it answered). */
export function readKeys(home: string): Record<string, string> {
  const file = folderPaths(home).keys;
  const keys = readKeyFile(file);
  const missing = EMBEDDED_ACCOUNTS.filter((a) => !keys?.[a]);
  if (!keys || missing.length)
    throw new Error(
      `${file} lacks the keys of ${missing.join(", ")}; the embedded storage server wrote no keys`,
    );
  return keys;
}
