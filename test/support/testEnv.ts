/**
 * The storage every integration test shares: one in-memory Azurite started by globalSetup, with a
 * source account and a backup account (plus devstoreaccount1 for lineage, and appacct for the
 * one suite that runs the app's fixed-name queues). Tests isolate
 * themselves with unique container and table names, never by starting their own Azurite.
 */
import crypto from "node:crypto";

export const SOURCE_ACCOUNT = "srcacct";
export const BACKUP_ACCOUNT = "bakacct";
/** Storage of the end-to-end app test alone: the app's queue names are fixed, so it gets an account to itself. */
export const APP_ACCOUNT = "appacct";

export interface TestStorage {
  blobPort: number;
  queuePort: number;
  tablePort: number;
  /** account → base64 key, in the STORAGE_ACCOUNT_KEYS syntax too */
  keys: Record<string, string>;
  storageAccountKeys: string;
  /** AzureWebJobsStorage for lineage (devstoreaccount1). */
  webJobsStorage: string;
  /** AzureWebJobsStorage of APP_ACCOUNT (queues and lineage of the end-to-end app test). */
  appStorage: string;
  blobUrl(account: string): string;
}

export const ENV_NAME = "DISKDELTA_TEST_STORAGE";

export function testStorage(): TestStorage {
  const raw = process.env[ENV_NAME];
  if (!raw)
    throw new Error(`${ENV_NAME} is not set: run the tests through jest (globalSetup starts Azurite)`);
  const s = JSON.parse(raw) as Omit<TestStorage, "blobUrl">;
  return { ...s, blobUrl: (account) => `http://127.0.0.1:${s.blobPort}/${account}` };
}

/** A name unique to this test process and call, valid for containers, blobs, tables and disk ids. */
export function uniqueName(prefix: string): string {
  return `${prefix}${crypto.randomBytes(5).toString("hex")}`.toLowerCase();
}
