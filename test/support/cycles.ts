/**
 * One random cycle of changes to a disk: scattered writes, clears of scattered pages and of whole
 * 4 MiB windows, and on fixed cycles a grow and a shrink. Deterministic for a seeded generator.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { MiB, seeded, writeRandom } from "./disks";

type Rng = ReturnType<typeof seeded>;

export async function randomCycle(client: PageBlobClient, rng: Rng, cycle: number): Promise<void> {
  let size = (await client.getProperties()).contentLength ?? 0;
  if (cycle === 4) {
    size += 4 * MiB + 512 * rng.int(1, 64); // grow, to a size that is not a whole window
    await client.resize(size);
  }
  if (cycle === 8) {
    size -= 4 * MiB + 512 * rng.int(1, 64); // shrink
    await client.resize(size);
  }
  const pages = size / 512;
  for (let i = rng.int(2, 8); i > 0; i--) {
    const start = rng.int(0, pages - 1);
    const length = Math.min(rng.int(1, 300), pages - start);
    await writeRandom(client, start * 512, (start + length) * 512, rng.bytes);
  }
  for (let i = rng.int(1, 4); i > 0; i--) {
    const start = rng.int(0, pages - 1);
    const length = Math.min(rng.int(1, 200), pages - start);
    await client.clearPages(start * 512, length * 512);
  }
  if (cycle % 3 === 0) {
    const windows = Math.floor(size / (4 * MiB));
    if (windows > 0) await client.clearPages(rng.int(0, windows - 1) * 4 * MiB, 4 * MiB);
  }
}
