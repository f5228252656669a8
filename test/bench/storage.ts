/**
 * The bench's storage, in a process of its own: an in-memory Azurite (blob, queue, table), the
 * diff fixture in front of its blob endpoint (answers page-range diffs correctly and records every
 * request) and a counting proxy in front of its table and queue endpoints. Both contenders run in
 * other processes and reach storage through the same proxies, so neither shares an event loop
 * with the server and both pay the same proxy hop.
 *
 * Forked by test/bench/processes.ts with an IPC channel. Input: BENCH_STORAGE (JSON: { keys },
 * account → base64 key) in the environment, since keys must not appear on a command line.
 * Messages: it sends { type: "ready", endpoints } once; on { type: "counts", id } it answers
 * { type: "counts", id, counts, cpuSeconds, rssMiB } with the cumulative request counts by kind,
 * its own CPU time and RSS (so the bench can tell how much of a run was the server's work); on
 * { type: "close" } it stops everything and exits.
 */
import { startDiffProxy } from "../fixtures/diffProxy";
import { DEV_ACCOUNT, DEV_ACCOUNT_KEY, startAzurite } from "../../lib/emulator/azurite";
import { countBlob, emptyCounts, startCountingProxy, tableKind, type Counts } from "./counting";
import { rssMiB } from "./rss";

export interface StorageEndpoints {
  /** Azurite itself: for writing the data and checking results, never counted. */
  blobDirect: string;
  /** Through the diff fixture / the counting proxies: what the contenders use. */
  blob: string;
  table: string;
  queue: string;
  /**
   * AzureWebJobsStorage for the engine: the development account (its key is public), with every
   * endpoint through the proxies, so lineage and queue requests are counted too.
   */
  appStorage: string;
}

export type StorageReply =
  | { type: "ready"; endpoints: StorageEndpoints }
  | { type: "counts"; id: number; counts: Counts; cpuSeconds: number; rssMiB: number };

export type StorageRequest = { type: "counts"; id: number } | { type: "close" };

async function main(): Promise<void> {
  const raw = process.env.BENCH_STORAGE;
  if (!raw || !process.send)
    throw new Error("storage.ts is forked by test/bench/bench.ts (BENCH_STORAGE, IPC)");
  const { keys } = JSON.parse(raw) as { keys: Record<string, string> };
  const azurite = await startAzurite({ accounts: keys });
  const blobDirect = `http://127.0.0.1:${azurite.blobPort}`;
  const diffProxy = await startDiffProxy({ target: blobDirect, keys });
  const counts = emptyCounts();
  const countTable = (method: string, path: string) => {
    const kind = tableKind(method, path);
    counts.requests[kind] = (counts.requests[kind] ?? 0) + 1;
  };
  const countQueue = () => {
    counts.requests.queue = (counts.requests.queue ?? 0) + 1;
  };
  const table = await startCountingProxy(`http://127.0.0.1:${azurite.tablePort}`, countTable);
  const queue = await startCountingProxy(`http://127.0.0.1:${azurite.queuePort}`, countQueue);

  /** The fixture keeps every request it saw; fold them into the counts and let them go. */
  const drain = () => {
    for (const info of diffProxy.requests) countBlob(counts, info);
    diffProxy.requests.length = 0;
  };
  // A 1 TiB run makes tens of thousands of requests: drain between marks too, to bound memory.
  const drainer = setInterval(drain, 1000);

  const send = (m: StorageReply) => process.send?.(m);
  process.on("message", (m: StorageRequest) => {
    if (m.type === "counts") {
      drain();
      const cpu = process.cpuUsage();
      send({
        type: "counts",
        id: m.id,
        counts: structuredClone(counts),
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        rssMiB: rssMiB(),
      });
    } else if (m.type === "close") {
      clearInterval(drainer);
      void Promise.all([diffProxy.close(), table.close(), queue.close()])
        .then(() => azurite.close())
        .finally(() => process.exit(0));
    }
  });
  // The bench died: do not outlive it.
  process.on("disconnect", () => process.exit(0));
  send({
    type: "ready",
    endpoints: {
      blobDirect,
      blob: diffProxy.url,
      table: table.url,
      queue: queue.url,
      appStorage:
        `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_ACCOUNT_KEY};` +
        `BlobEndpoint=${diffProxy.url}/${DEV_ACCOUNT};QueueEndpoint=${queue.url}/${DEV_ACCOUNT};` +
        `TableEndpoint=${table.url}/${DEV_ACCOUNT};`,
    },
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench storage: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
