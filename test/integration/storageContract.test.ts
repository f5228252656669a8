/**
 * The storage port's one contract (test/contract/storage.ts) on every implementation: the Azure
 * store on the shared Azurite, the Azure store through the diff fixture (diffs answered as Azure
 * answers them), and the memory store the simulations run on.
 */
import crypto from "node:crypto";
import { AzureCredentials } from "../../lib/azure/credentials";
import { bufferMd5 } from "../../lib/core/md5";
import { AzureStore } from "../../lib/storage/azure";
import { MemoryStore } from "../../lib/storage/memory";
import { blobAt } from "../../lib/storage/port";
import { blobLocation, parseAccountUrl } from "../../lib/storage/urls";
import { storageContract } from "../contract/storage";
import { startDiffProxy, type DiffProxy } from "../fixtures/diffProxy";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

const MiB = 1024 * 1024;

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

describe("Azure store on Azurite: pooled read bodies", () => {
  test("a released body's memory serves the next pooled read, with its own bytes and MD5; unpooled reads never share it", async () => {
    const store = azureStore();
    const account = parseAccountUrl(testStorage().blobUrl(SOURCE_ACCOUNT));
    const blob = blobAt(blobLocation(account, uniqueName("ct"), "pooled"));
    await store.ensureContainer(blob.location);
    await store.create(blob, 8 * MiB);
    const first = crypto.randomBytes(MiB);
    const second = crypto.randomBytes(2 * MiB);
    await store.write(blob, 0, first);
    await store.write(blob, 4 * MiB, second);
    const md5 = (b: Buffer) => crypto.createHash("md5").update(b).digest();

    const a = await store.read(blob, { start: 0, end: MiB }, { pooled: true });
    expect(a.equals(first)).toBe(true);
    const held = a.buffer;
    store.release(a);
    const b = await store.read(blob, { start: 4 * MiB, end: 6 * MiB }, { pooled: true });
    // The same memory, lent again: the pool works.
    expect(b.buffer).toBe(held);
    expect(b.equals(second)).toBe(true);
    expect(bufferMd5(b)).toEqual(md5(second));
    // A body is taken back once; releasing it again does not put its slab on the list twice.
    store.release(b);
    store.release(b);
    const c = await store.read(blob, { start: 0, end: MiB }, { pooled: true });
    const d = await store.read(blob, { start: 4 * MiB, end: 6 * MiB }, { pooled: true });
    expect(c.buffer).not.toBe(d.buffer);
    expect(c.equals(first) && d.equals(second)).toBe(true);
    store.release(c);
    // A read that did not ask for the pool owns its buffer; handing it "back" changes nothing.
    const e = await store.read(blob, { start: 0, end: MiB });
    expect(e.buffer).not.toBe(c.buffer);
    store.release(e);
    const f = await store.read(blob, { start: 4 * MiB, end: 6 * MiB }, { pooled: true });
    expect(f.buffer).toBe(c.buffer);
    expect(e.equals(first) && f.equals(second)).toBe(true);
  });
});
