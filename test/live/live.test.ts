/**
 * The backup scenarios against a real Azure storage account: a small page-blob disk, a full backup,
 * writes and clears, incrementals that must use the service's page-range diff (not the compare that
 * Azurite forces), a grow and a shrink, and an overwritten blob that the service refuses to diff
 * (a resync). After every run the restore point must equal its source snapshot byte for byte, valid
 * ranges included. Everything it creates lives in uniquely named containers and tables, deleted at the end.
 *
 * Skipped, without touching the network, unless DISKDELTA_LIVE_SOURCE_ACCOUNT_URL and
 * DISKDELTA_LIVE_BACKUP_ACCOUNT_URL are set; see test/live/README.md.
 */
import { TableClient } from "@azure/data-tables";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { silentLogger, type Logger } from "../../lib/core/logger";
import { parseAccountUrl, type AccountLocation } from "../../lib/storage/urls";
import { openEngine, type Engine } from "../../lib/compose";
import type { RunRecord } from "../../lib/lineage/types";
import { expectSameImage, MiB, readImage, seeded, writeRandom } from "../support/disks";
import { testStorage, uniqueName } from "../support/testEnv";

const SOURCE_VAR = "DISKDELTA_LIVE_SOURCE_ACCOUNT_URL";
const BACKUP_VAR = "DISKDELTA_LIVE_BACKUP_ACCOUNT_URL";
const LINEAGE_VAR = "DISKDELTA_LIVE_LINEAGE_CONNECTION";

const missing = [SOURCE_VAR, BACKUP_VAR].filter((name) => !process.env[name]?.trim());
const skipReason = missing.length
  ? `${missing.join(" and ")} ${missing.length > 1 ? "are" : "is"} not set (see test/live/README.md)`
  : undefined;
if (skipReason) {
  // Printed once per run so a green "skipped" is never mistaken for a pass against Azure.
  console.warn(`live Azure tests skipped: ${skipReason}`);
}
const describeLive = skipReason ? describe.skip : describe;

/** One step of a real backup takes seconds; the whole scenario, a few minutes on a slow link. */
const LIVE_TIMEOUT_MS = 15 * 60_000;
const DISK_BYTES = 16 * MiB;

describeLive(skipReason ? `live Azure (skipped: ${skipReason})` : "live Azure backup scenarios", () => {
  let engine: Engine;
  let source: AccountLocation;
  let backup: AccountLocation;
  let sourceService: BlobServiceClient;
  let backupService: BlobServiceClient;
  const sourceContainer = uniqueName("ddlivesrc");
  const backupContainer = uniqueName("ddlivebak");
  const tablePrefix = uniqueName("ddlive");
  const diskId = uniqueName("live");
  const warnings: string[] = [];

  const log: Logger = {
    ...silentLogger,
    warn: (m) => warnings.push(m),
    error: (m) => warnings.push(m),
  };

  /** The lineage: the given connection (a connection string or a table endpoint for an identity), else the test Azurite. */
  function lineageEnv(): Record<string, string> {
    const given = process.env[LINEAGE_VAR]?.trim();
    if (!given) return { AzureWebJobsStorage: testStorage().webJobsStorage };
    if (/^https?:\/\//i.test(given)) return { AzureWebJobsStorage__tableServiceUri: given };
    return { AzureWebJobsStorage: given };
  }

  /** A client of one lineage table, reached as the engine reaches it. */
  function tableClient(name: string): TableClient {
    const storage = engine.config.storage!;
    return storage.kind === "connectionString"
      ? TableClient.fromConnectionString(storage.connectionString, name)
      : new TableClient(storage.tableServiceUri, name, engine.credentials.identity());
  }

  /** A test-side client for an account, with the engine's credential choice and the SDK's own retries. */
  function service(loc: AccountLocation): BlobServiceClient {
    const key = engine.config.accountKeys.get(loc.account);
    return new BlobServiceClient(
      loc.serviceUrl,
      key ? new StorageSharedKeyCredential(loc.account, key) : engine.credentials.identity(),
    );
  }

  beforeAll(async () => {
    source = parseAccountUrl(process.env[SOURCE_VAR]!.trim(), SOURCE_VAR);
    backup = parseAccountUrl(process.env[BACKUP_VAR]!.trim(), BACKUP_VAR);
    const env: NodeJS.ProcessEnv = {
      ...lineageEnv(),
      DISKDELTA_TABLE_PREFIX: tablePrefix,
      // 4 MiB segments: the 16 MiB disk is listed in several Get Page Ranges calls, as a large disk would be.
      DISKDELTA_SEGMENT_BYTES: String(4 * MiB),
      DISKDELTA_DIFF_MODE: "auto",
    };
    if (process.env.STORAGE_ACCOUNT_KEYS) env.STORAGE_ACCOUNT_KEYS = process.env.STORAGE_ACCOUNT_KEYS;
    if (process.env.DISKDELTA_COPY_MODE) env.DISKDELTA_COPY_MODE = process.env.DISKDELTA_COPY_MODE;
    engine = await openEngine(log, env);
    sourceService = service(source);
    backupService = service(backup);
    await sourceService.getContainerClient(sourceContainer).create();
  }, LIVE_TIMEOUT_MS);

  afterAll(async () => {
    if (!engine) return;
    const problems: string[] = [];
    const attempt = async (what: string, op: () => Promise<unknown>) => {
      try {
        await op();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message.split("\n")[0]}`);
      }
    };
    // Deleting a container deletes its blobs and snapshots with it.
    await attempt(`delete container ${sourceContainer}`, () =>
      sourceService.getContainerClient(sourceContainer).deleteIfExists(),
    );
    await attempt(`delete container ${backupContainer}`, () =>
      backupService.getContainerClient(backupContainer).deleteIfExists(),
    );
    for (const table of ["Disks", "Runs", "Points", "Progress"]) {
      await attempt(`delete table ${tablePrefix}${table}`, () =>
        tableClient(`${tablePrefix}${table}`).deleteTable(),
      );
    }
    await engine.close();
    if (problems.length) {
      console.warn(`live test cleanup left something behind; delete it by hand:\n  ${problems.join("\n  ")}`);
    }
  }, LIVE_TIMEOUT_MS);

  test(
    "full, incrementals by service diff (writes, clears, grow, shrink) and a resync: every restore point equals its source snapshot",
    async () => {
      const rng = seeded(20260115);
      const disk = sourceService.getContainerClient(sourceContainer).getPageBlobClient("disk.vhd");
      await disk.create(DISK_BYTES);
      await addDisk(engine, {
        id: diskId,
        source: disk.url,
        backupAccount: backup.serviceUrl,
        backupContainer,
      });
      const backupBlob = backupService.getContainerClient(backupContainer).getPageBlobClient(diskId);

      /** Backs up once and checks the restore point against the source snapshot it was made from. */
      async function backupAndVerify(what: string): Promise<RunRecord> {
        const run = await backupDisk(engine, diskId, { trigger: "cli" });
        expect(run.state).toBe("succeeded");
        const point = await engine.lineage.getPoint(diskId, run.restorePoint!);
        expect(point).toBeDefined();
        expect(point!.sourceSnapshot).toBe(run.sourceSnapshot);
        const restored = await readImage(backupBlob.withSnapshot(point!.backupSnapshot));
        const snapshot = await readImage(disk.withSnapshot(run.sourceSnapshot!));
        expectSameImage(restored, snapshot, what);
        return run;
      }

      // 1. Full: only the valid ranges are copied.
      await writeRandom(disk, 0, 3 * MiB, rng.bytes);
      await writeRandom(disk, 9 * MiB, 9 * MiB + 64 * 1024, rng.bytes);
      const full = await backupAndVerify("full");
      expect(full.kind).toBe("full");
      expect(full.detection).toBe("valid-ranges");
      expect(full.bytesCopied).toBe(3 * MiB + 64 * 1024);

      // 2. Writes and clears of pages valid at the base: the service diff must report both.
      await writeRandom(disk, 512 * 7, 512 * 9, rng.bytes); // 2 pages inside the written region
      await writeRandom(disk, 5 * MiB, 5 * MiB + 512, rng.bytes); // 1 page in an empty region
      await writeRandom(disk, 4 * MiB - 1024, 4 * MiB + 1024, rng.bytes); // across a segment boundary
      await disk.clearPages(MiB, 512 * 3); // 3 pages
      await disk.clearPages(9 * MiB, 64 * 1024); // the whole second region
      const inc = await backupAndVerify("incremental: writes and clears");
      expect(inc.kind).toBe("incremental");
      expect(inc.detection).toBe("service-diff");
      expect(inc.rangesCleared).toBeGreaterThanOrEqual(2);
      expect(inc.bytesCleared).toBeGreaterThanOrEqual(3 * 512 + 64 * 1024);
      // Only what changed: 2 + 1 + 4 pages written, never the disk. (At least those 7 pages; the
      // bound allows for the service reporting changes more coarsely than page by page.)
      expect(inc.bytesCopied).toBeGreaterThanOrEqual(7 * 512);
      expect(inc.bytesCopied).toBeLessThan(MiB);

      // 3. Nothing changed: an empty incremental.
      const idle = await backupAndVerify("incremental: no change");
      expect(idle.detection).toBe("service-diff");
      expect(idle.bytesCopied).toBe(0);
      expect(idle.bytesCleared).toBe(0);

      // 4. Grow to a size that is not a whole window, write in the new part, clear a whole window.
      const grown = DISK_BYTES + 4 * MiB + 512 * 5;
      await disk.resize(grown);
      await writeRandom(disk, grown - 512 * 3, grown, rng.bytes);
      await disk.clearPages(0, 4 * MiB);
      const grow = await backupAndVerify("incremental: grow");
      expect(grow.detection).toBe("service-diff");
      expect(grow.sourceSize).toBe(grown);

      // 5. Shrink below a written region.
      await writeRandom(disk, 12 * MiB, 12 * MiB + 512 * 10, rng.bytes);
      await disk.resize(12 * MiB + 512 * 4);
      const shrink = await backupAndVerify("incremental: shrink");
      expect(shrink.detection).toBe("service-diff");
      expect(shrink.sourceSize).toBe(12 * MiB + 512 * 4);

      // 6. Put Blob over the disk (as a re-imaged disk would be): the service refuses the diff
      //    (BlobOverwritten, 409) and the run resyncs by compare instead of failing.
      await disk.create(8 * MiB);
      await writeRandom(disk, MiB, 2 * MiB, rng.bytes);
      const resync = await backupAndVerify("resync after overwrite");
      expect(resync.kind).toBe("resync");
      expect(resync.detection).toBe("compare");
      expect(resync.reason).toMatch(/BlobOverwritten/);

      // 7. And incrementals continue from the resynced base by service diff.
      await writeRandom(disk, 0, 512, rng.bytes);
      const after = await backupAndVerify("incremental after resync");
      expect(after.kind).toBe("incremental");
      expect(after.detection).toBe("service-diff");
      expect(after.bytesCopied).toBeGreaterThanOrEqual(512);
      expect(after.bytesCopied).toBeLessThan(MiB);

      // Only the base is left of the disk's snapshots; one restore point per run.
      const snapshots: string[] = [];
      for await (const item of sourceService
        .getContainerClient(sourceContainer)
        .listBlobsFlat({ includeSnapshots: true })) {
        if (item.snapshot) snapshots.push(item.snapshot);
      }
      expect(snapshots).toEqual([(await engine.lineage.getDisk(diskId))!.baseSnapshot]);
      expect(await engine.lineage.listPoints(diskId)).toHaveLength(7);
      // No failed cleanup of an old base (retries after throttling are fine).
      expect(warnings.filter((w) => !/diff from the base was refused|^retrying/.test(w))).toEqual([]);
    },
    LIVE_TIMEOUT_MS,
  );
});
