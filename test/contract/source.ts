/**
 * The source port's contract (lib/sources/port.ts), one suite for every kind: a harness makes a
 * disk of its kind, changes it the way a guest does, and hands over the port; the suite holds the
 * port to what the run relies on. Run by test/integration/managedSource.test.ts against the page
 * blob kind and the managed-disk kind, on Azurite behind the diff fixture (and, for managed
 * disks, the ARM fake through the real ARM client).
 *
 * - a snapshot holds the disk as it was when taken, at the size the kind reports, read through
 *   the address `open` gives, page by page and range by range;
 * - `snapshotFor` with the same run adopts the run's snapshot (a resumed run takes no second one);
 *   another run gets another;
 * - `taggedSnapshots` lists this disk's snapshots with their runs, and nothing of another disk;
 * - an opened snapshot's `base` diffs a later snapshot against it: pages written and cleared;
 * - `close` never throws, twice included; `deleteSnapshot` removes a snapshot, and deleting one
 *   already gone is no error.
 */
import crypto from "node:crypto";
import type { Source } from "../../lib/sources/port";
import type { PageStore } from "../../lib/storage/port";
import { normalize, type PageRange } from "../../lib/ranges";

const MiB = 1024 * 1024;

export interface ContractDisk {
  diskId: string;
  source: Source;
  /** What the guest does: write and clear pages of the disk's content. */
  write(offset: number, data: Buffer): Promise<void>;
  clear(offset: number, length: number): Promise<void>;
  /** The snapshot's bytes and valid ranges read straight from Azurite, by-passing the port (the oracle). */
  oracle(snapshotId: string): Promise<{ size: number; bytes: Buffer; valid: PageRange[] }>;
}

export interface SourceHarness {
  kind: string;
  storage: PageStore;
  /** A new, empty disk of `contentBytes` (a multiple of 1 MiB). */
  newDisk(contentBytes: number): Promise<ContractDisk>;
  /** Size of a snapshot of a disk of `contentBytes`: the page blob's, or content + the VHD footer. */
  exportSize(contentBytes: number): number;
  /** Snapshots of the disk that exist (ids), whatever the port says. */
  existingSnapshots(disk: ContractDisk): Promise<string[]>;
  /** No access left open on anything (managed disks: no grant); always true for page blobs. */
  openAccess(): Promise<number>;
}

function runId(): string {
  return `r-${new Date().toISOString().replace(/[-:.]/g, "")}-${crypto.randomBytes(3).toString("hex")}`;
}

async function readAll(storage: PageStore, source: Source, snapshotId: string) {
  const opened = await source.open(snapshotId);
  try {
    const props = await storage.properties(opened.address);
    const size = props!.size;
    const valid: PageRange[] = [];
    let marker: string | undefined;
    do {
      const page = await storage.listRanges(opened.address, { start: 0, end: size }, { marker });
      valid.push(...page.ranges);
      marker = page.next;
    } while (marker);
    const bytes = Buffer.alloc(size);
    for (let at = 0; at < size; at += 4 * MiB) {
      const end = Math.min(size, at + 4 * MiB);
      (await storage.read(opened.address, { start: at, end })).copy(bytes, at);
    }
    return { size, bytes, valid: normalize(valid) };
  } finally {
    await opened.close();
  }
}

export function sourceContract(name: string, harness: () => SourceHarness): void {
  describe(`source contract: ${name}`, () => {
    test("a snapshot holds the disk as it was when taken, read through the port, at the kind's size", async () => {
      const h = harness();
      const disk = await h.newDisk(8 * MiB);
      const data = crypto.randomBytes(MiB);
      await disk.write(2 * MiB, data);
      const snap = await disk.source.snapshotFor(disk.diskId, runId());
      expect(snap.size).toBe(h.exportSize(8 * MiB));
      // Later guest writes do not reach the snapshot.
      await disk.write(2 * MiB, crypto.randomBytes(MiB));
      const read = await readAll(h.storage, disk.source, snap.id);
      const oracle = await disk.oracle(snap.id);
      expect(read.size).toBe(snap.size);
      expect(read.bytes.equals(oracle.bytes)).toBe(true);
      expect(read.valid).toEqual(oracle.valid);
      expect(read.bytes.subarray(2 * MiB, 3 * MiB).equals(data)).toBe(true);
      expect(await h.openAccess()).toBe(0);
      await disk.source.deleteSnapshot(snap.id);
    });

    test("the same run adopts its snapshot; another run takes another; the tags say whose", async () => {
      const h = harness();
      const disk = await h.newDisk(4 * MiB);
      const other = await h.newDisk(4 * MiB);
      const r1 = runId();
      const r2 = runId();
      const a = await disk.source.snapshotFor(disk.diskId, r1);
      const again = await disk.source.snapshotFor(disk.diskId, r1);
      expect(again.id).toBe(a.id);
      const b = await disk.source.snapshotFor(disk.diskId, r2);
      expect(b.id).not.toBe(a.id);
      await other.source.snapshotFor(other.diskId, runId());
      const tagged = await disk.source.taggedSnapshots(disk.diskId);
      expect(tagged.map((t) => [t.id, t.runId]).sort()).toEqual(
        [
          [a.id, r1],
          [b.id, r2],
        ].sort(),
      );
      expect((await h.existingSnapshots(disk)).sort()).toEqual([a.id, b.id].sort());
      for (const s of [a, b]) await disk.source.deleteSnapshot(s.id);
      expect(await disk.source.taggedSnapshots(disk.diskId)).toEqual([]);
    });

    test("a later snapshot diffs against an opened base: the pages written and the pages cleared", async () => {
      const h = harness();
      const disk = await h.newDisk(8 * MiB);
      await disk.write(0, crypto.randomBytes(2 * MiB));
      const first = await disk.source.snapshotFor(disk.diskId, runId());
      await disk.write(4 * MiB, crypto.randomBytes(64 * 1024));
      await disk.clear(MiB, 512 * 1024);
      const second = await disk.source.snapshotFor(disk.diskId, runId());
      const base = await disk.source.open(first.id);
      const now = await disk.source.open(second.id);
      try {
        const page = await h.storage.listDiff(now.address, { start: 0, end: second.size }, base.base);
        expect(page.ranges).toEqual([{ start: 4 * MiB, end: 4 * MiB + 64 * 1024 }]);
        expect(page.clears).toEqual([{ start: MiB, end: MiB + 512 * 1024 }]);
      } finally {
        await now.close();
        await base.close();
        // Closing twice is harmless.
        await base.close();
      }
      expect(await h.openAccess()).toBe(0);
      for (const s of [first, second]) await disk.source.deleteSnapshot(s.id);
    });

    test("deleting a snapshot removes it; deleting it again is no error", async () => {
      const h = harness();
      const disk = await h.newDisk(4 * MiB);
      const snap = await disk.source.snapshotFor(disk.diskId, runId());
      await disk.source.deleteSnapshot(snap.id);
      await disk.source.deleteSnapshot(snap.id);
      expect(await h.existingSnapshots(disk)).toEqual([]);
      expect(await disk.source.taggedSnapshots(disk.diskId)).toEqual([]);
    });
  });
}
