/**
 * `diskdelta info`: the version, the data folder in use (a relative DISKDELTA_HOME resolved once,
 * against the working directory), which storage the commands use and, on the embedded default, the
 * storage server serving the folder now. It starts and contacts nothing: the server is read from
 * the folder's lock (lib/emulator/lock.ts) and checked with the same local tests a client makes
 * before it attaches (the pid is alive and is a storage server of this boot).
 */
import { loadConfig } from "../../config/settings";
import { folderPaths } from "../../emulator/folder";
import { currentLock, mayBeServing } from "../../emulator/lock";
import { version } from "../version";
import { print, type GlobalOptions } from "../output";
import { rows as pairs } from "../format";

function storageWords(env: NodeJS.ProcessEnv): string {
  const cs = env.AzureWebJobsStorage?.trim();
  if (cs === "UseDevelopmentStorage=true")
    return "a local Azurite on the default ports (UseDevelopmentStorage=true)";
  if (cs)
    return `the account ${/AccountName=([^;]+)/i.exec(cs)?.[1] ?? "(named by its endpoints)"} (AzureWebJobsStorage)`;
  if (env.AzureWebJobsStorage__tableServiceUri || env.AzureWebJobsStorage__accountName)
    return "an account reached with an identity (AzureWebJobsStorage__*)";
  return "the embedded storage (AzureWebJobsStorage is unset)";
}

function homeWords(home: string, raw: string | undefined): string {
  if (!raw?.trim()) return `${home} (the default; DISKDELTA_HOME moves it)`;
  return raw.trim() === home ? `${home} (DISKDELTA_HOME)` : `${home} (DISKDELTA_HOME=${raw.trim()})`;
}

export async function infoCommand(opts: GlobalOptions): Promise<void> {
  const config = loadConfig(process.env);
  const embedded = !config.storage;
  const lock = embedded ? currentLock(config.home) : undefined;
  const serving = lock && mayBeServing(lock) ? lock : undefined;
  const paths = folderPaths(config.home);
  const info = {
    version: version(),
    node: process.version,
    home: config.home,
    homeSetting: process.env.DISKDELTA_HOME,
    storage: embedded ? "embedded" : "configured",
    storageDescription: storageWords(process.env),
    embeddedPort: config.embeddedPort,
    embeddedServer: serving
      ? {
          pid: serving.pid,
          blobPort: serving.blobPort,
          queuePort: serving.queuePort,
          tablePort: serving.tablePort,
          startedAt: serving.startedAt,
          log: paths.log,
        }
      : undefined,
  };
  const serverWords = serving
    ? `pid ${serving.pid}, ports ${serving.blobPort}-${serving.tablePort}, since ${serving.startedAt.replace(/\.\d+Z$/, "Z")}; log ${paths.log}`
    : `none running (one starts on ports ${config.embeddedPort}-${config.embeddedPort + 2} with the next command)`;
  print(
    opts,
    info,
    pairs([
      ["version", info.version],
      ["node", info.node],
      ["data folder", homeWords(config.home, process.env.DISKDELTA_HOME)],
      ["storage", info.storageDescription],
      ...(embedded ? ([["storage server", serverWords]] as Array<[string, string]>) : []),
    ]),
  );
}
