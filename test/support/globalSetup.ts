import crypto from "node:crypto";
import { startAzurite, DEV_ACCOUNT, DEV_ACCOUNT_KEY, type RunningAzurite } from "../../lib/emulator/azurite";
import { APP_ACCOUNT, BACKUP_ACCOUNT, ENV_NAME, SOURCE_ACCOUNT } from "./testEnv";

declare global {
  var __DISKDELTA_AZURITE__: RunningAzurite | undefined;
}

export default async function globalSetup(): Promise<void> {
  const keys: Record<string, string> = {
    [SOURCE_ACCOUNT]: crypto.randomBytes(64).toString("base64"),
    [BACKUP_ACCOUNT]: crypto.randomBytes(64).toString("base64"),
    [APP_ACCOUNT]: crypto.randomBytes(64).toString("base64"),
  };
  const azurite = await startAzurite({ accounts: keys });
  globalThis.__DISKDELTA_AZURITE__ = azurite;
  const allKeys = { ...keys, [DEV_ACCOUNT]: DEV_ACCOUNT_KEY };
  process.env[ENV_NAME] = JSON.stringify({
    blobPort: azurite.blobPort,
    queuePort: azurite.queuePort,
    tablePort: azurite.tablePort,
    keys: allKeys,
    storageAccountKeys: Object.entries(allKeys)
      .map(([a, k]) => `${a}:${k}`)
      .join(";"),
    webJobsStorage: azurite.connectionString(DEV_ACCOUNT, DEV_ACCOUNT_KEY),
    appStorage: azurite.connectionString(APP_ACCOUNT, keys[APP_ACCOUNT]),
  });
}
