/**
 * The embedded default, as the composition root attaches to it: with no AzureWebJobsStorage, an
 * Azurite serving the data folder (DISKDELTA_HOME) for every diskdelta process at once
 * (lib/emulator). Azurite is a development dependency: where it is not installed (a production
 * install, `npm ci --omit=dev`) this says so in one line instead of failing on a missing module.
 */
import type { Config } from "../config/settings";
import { InputError } from "../core/errors";
import type { Logger } from "../core/logger";

export interface AttachedEmbedded {
  connectionString: string;
  keys: Map<string, string>;
  blobUrl(account: string): string;
  serving: boolean;
  close(): Promise<void>;
}

export function azuriteInstalled(): boolean {
  try {
    require.resolve("azurite/package.json");
    return true;
  } catch {
    return false;
  }
}

export async function attachEmbedded(config: Config, log: Logger): Promise<AttachedEmbedded> {
  if (!azuriteInstalled()) {
    throw new InputError([
      "no AzureWebJobsStorage is set and the embedded storage (Azurite) is not installed: set AzureWebJobsStorage to your storage, or install the development dependencies with 'npm ci'",
    ]);
  }
  const { startEmbedded } = await import("../emulator/embedded");
  const embedded = await startEmbedded(config.home, config.embeddedPort);
  log.info(`embedded storage: ${config.home} (blob ${embedded.blobUrl("")})`);
  return embedded;
}
