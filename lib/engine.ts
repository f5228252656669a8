/**
 * Builds everything a use case needs from the configuration, once: storage clients, the lineage
 * store, a logger. With no AzureWebJobsStorage it first starts the embedded default. `close()`
 * stops whatever was started here.
 */
import { StorageClients } from "./azure/clients";
import type { EngineDeps, Logger, RunHooks } from "./backup/run";
import { loadConfig, type Config } from "./config";
import { startEmbedded, type EmbeddedStorage } from "./emulator/embedded";
import { TableLineage } from "./lineage/tableStore";
import { afterSeal } from "./retention/hooks";
import { reportRunEnded, reportTimerTick } from "./telemetry";

export interface Engine extends EngineDeps {
  embedded?: EmbeddedStorage;
  close(): Promise<void>;
}

export async function openEngine(log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Engine> {
  let config: Config = loadConfig(env);
  let embedded: EmbeddedStorage | undefined;
  if (!config.storage) {
    embedded = await startEmbedded(config.home, config.embeddedPort);
    config = {
      ...config,
      storage: { kind: "connectionString", connectionString: embedded.connectionString },
      accountKeys: new Map([...embedded.keys, ...config.accountKeys]),
    };
  }
  const clients = new StorageClients(config);
  const prefix = config.tablePrefix;
  const lineage = new TableLineage((name) => clients.table(name), {
    disks: `${prefix}Disks`,
    runs: `${prefix}Runs`,
    points: `${prefix}Points`,
  });
  await lineage.ensureTables();
  // Fan-out completion counters (lib/app/backups.ts); in Azure the infra declares this table too.
  await clients.table(`${prefix}Progress`).createTable();
  // After-seal work, run-end and timer-tick reporting (lib/backup/run.ts RunHooks); each is best effort.
  const hooks: RunHooks = {
    afterSeal,
    runEnded: reportRunEnded(env, config.schedule),
    timerTicked: reportTimerTick(env),
  };
  return {
    config,
    clients,
    lineage,
    log,
    hooks,
    embedded,
    close: async () => {
      await embedded?.close();
    },
  };
}
