/** `diskdelta info`: the version, the data folder in use, and which storage the commands use. Contacts nothing. */
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../../config/settings";
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

export async function infoCommand(opts: GlobalOptions): Promise<void> {
  const config = loadConfig(process.env);
  const embedded = !config.storage;
  const lock = path.join(config.home, "server.json");
  let server: { pid?: number; blobPort?: number } | undefined;
  try {
    server = JSON.parse(fs.readFileSync(lock, "utf8")) as { pid?: number; blobPort?: number };
  } catch {
    server = undefined;
  }
  const info = {
    version: version(),
    node: process.version,
    home: config.home,
    storage: embedded ? "embedded" : "configured",
    storageDescription: storageWords(process.env),
    embeddedPort: config.embeddedPort,
    embeddedServer: embedded && server?.pid ? { pid: server.pid, blobPort: server.blobPort } : undefined,
  };
  print(
    opts,
    info,
    pairs([
      ["version", info.version],
      ["node", info.node],
      [
        "data folder",
        `${info.home}${process.env.DISKDELTA_HOME ? " (DISKDELTA_HOME)" : " (default; DISKDELTA_HOME moves it)"}`,
      ],
      ["storage", info.storageDescription],
      ...(embedded
        ? ([
            [
              "embedded server",
              server?.pid
                ? `pid ${server.pid}, blob port ${server.blobPort}`
                : `none running (ports ${config.embeddedPort}-${config.embeddedPort + 2} when one starts)`,
            ],
          ] as Array<[string, string]>)
        : []),
    ]),
  );
}
