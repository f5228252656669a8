/**
 * One process of the embedded-storage tests (test/integration/embedded.test.ts), run compiled:
 * `node dist/test/support/embeddedClient.js <home> <basePort> <idleMs> <id>`. It attaches to the
 * data folder's embedded storage the way every diskdelta command does (startEmbedded), writes a
 * blob and a table row named <id> through it with the real SDK clients, reads both back, ends its
 * lease and prints one JSON line: its id, the server it used, and how long attaching took.
 */
import { TableClient } from "@azure/data-tables";
import { BlobServiceClient } from "@azure/storage-blob";
import { startEmbedded } from "../../lib/emulator/embedded";

export const CONTAINER = "rounds";
export const TABLE = "rounds";

async function main(): Promise<void> {
  const [home, port, idle, id] = process.argv.slice(2);
  const started = Date.now();
  const storage = await startEmbedded(home, Number(port), { idleMs: Number(idle) });
  const attachMs = Date.now() - started;
  try {
    const body = `written by ${id} through pid ${process.pid}`;
    const container = BlobServiceClient.fromConnectionString(storage.connectionString).getContainerClient(
      CONTAINER,
    );
    await container.createIfNotExists();
    const blob = container.getBlockBlobClient(id);
    await blob.upload(body, Buffer.byteLength(body));
    const read = (await blob.downloadToBuffer()).toString();
    if (read !== body) throw new Error(`blob ${id} read back as ${JSON.stringify(read)}`);

    const table = TableClient.fromConnectionString(storage.connectionString, TABLE, {
      allowInsecureConnection: true,
    });
    await table.createTable(); // no error when it exists
    await table.upsertEntity({ partitionKey: "p", rowKey: id, body });
    const row = await table.getEntity<{ body: string }>("p", id);
    if (row.body !== body) throw new Error(`row ${id} read back as ${JSON.stringify(row.body)}`);
    process.stdout.write(
      `${JSON.stringify({ id, attachMs, totalMs: Date.now() - started, server: storage.server.pid, blobUrl: storage.blobUrl("x") })}\n`,
    );
  } finally {
    await storage.close();
  }
}

// Run as a script only: the test imports the names above.
if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`embeddedClient: ${(err as Error).message ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
