/**
 * The storage port's one contract (test/contract/storage.ts) on every implementation: the Azure
 * store on the shared Azurite, the Azure store through the diff fixture (diffs answered as Azure
 * answers them), and the memory store the simulations run on.
 */
import { AzureCredentials } from "../../lib/azure/credentials";
import { AzureStore } from "../../lib/storage/azure";
import { MemoryStore } from "../../lib/storage/memory";
import { parseAccountUrl } from "../../lib/storage/urls";
import { storageContract } from "../contract/storage";
import { startDiffProxy, type DiffProxy } from "../fixtures/diffProxy";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

function azureStore(): AzureStore {
  const s = testStorage();
  const credentials = new AzureCredentials({
    accountKeys: new Map(Object.entries(s.keys)),
    storage: undefined,
    allowedHosts: [],
  });
  return new AzureStore(credentials, { requestTimeoutMs: 30_000, bodyStallMs: 30_000 });
}

storageContract("Azure store on Azurite", async () => ({
  store: azureStore(),
  account: parseAccountUrl(testStorage().blobUrl(SOURCE_ACCOUNT)),
  container: uniqueName("ct"),
  serverSideCopy: false,
  trustworthyDiffs: false,
}));

let proxy: DiffProxy;
storageContract(
  "Azure store through the diff fixture",
  async () => {
    const s = testStorage();
    proxy = await startDiffProxy({ target: `http://127.0.0.1:${s.blobPort}`, keys: s.keys });
    return {
      store: azureStore(),
      account: parseAccountUrl(proxy.blobUrl(SOURCE_ACCOUNT)),
      container: uniqueName("ct"),
      serverSideCopy: false,
      trustworthyDiffs: true,
    };
  },
  () => proxy.close(),
);

storageContract("memory store", async () => ({
  store: new MemoryStore(),
  account: parseAccountUrl("https://memacct.blob.core.windows.net"),
  container: uniqueName("ct"),
  serverSideCopy: true,
  trustworthyDiffs: true,
}));
