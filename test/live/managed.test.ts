/**
 * The managed-disk scenario against real Azure: in a resource group you name, it uploads a small
 * managed disk with data (Upload, the way a user's disk gets bytes without a VM), registers it,
 * takes a full backup (only the valid ranges copied; the point equal to the incremental snapshot),
 * a second backup through the service's managed-disk diff (nothing changed: `unchanged`, nothing
 * copied), restores it as a new managed disk (equal to the point), and backs that one up
 * (`unchanged`). Everything it makes — disks, snapshots, the backup container, lineage tables — is
 * deleted at the end, and nothing of the grants stays open.
 *
 * Skipped, without touching the network, unless DISKDELTA_LIVE_RESOURCE_GROUP_ID,
 * DISKDELTA_LIVE_LOCATION and DISKDELTA_LIVE_BACKUP_ACCOUNT_URL are set; see test/live/README.md.
 */
import crypto from "node:crypto";
import { ComputeManagementClient } from "@azure/arm-compute";
import { DefaultAzureCredential } from "@azure/identity";
import {
  AnonymousCredential,
  BlobServiceClient,
  PageBlobClient,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { TableClient } from "@azure/data-tables";
import { openEngine, type Engine } from "../../lib/compose";
import { addDisk } from "../../lib/disks/register";
import { backupDisk } from "../../lib/backup/run";
import { silentLogger } from "../../lib/core/logger";
import { restoreAsManagedDisk } from "../../lib/restore/managedDisk";
import { fixedVhdFooter } from "../../lib/restore/vhd";
import { parseAccountUrl } from "../../lib/storage/urls";
import { expectSameImage, MiB, readImage } from "../support/disks";
import { testStorage, uniqueName } from "../support/testEnv";

const GROUP_VAR = "DISKDELTA_LIVE_RESOURCE_GROUP_ID";
const LOCATION_VAR = "DISKDELTA_LIVE_LOCATION";
const BACKUP_VAR = "DISKDELTA_LIVE_BACKUP_ACCOUNT_URL";
const LINEAGE_VAR = "DISKDELTA_LIVE_LINEAGE_CONNECTION";

const missing = [GROUP_VAR, LOCATION_VAR, BACKUP_VAR].filter((name) => !process.env[name]?.trim());
const skipReason = missing.length ? `${missing.join(", ")} not set (see test/live/README.md)` : undefined;
if (skipReason) console.warn(`live managed-disk tests skipped: ${skipReason}`);
const describeLive = skipReason ? describe.skip : describe;

const LIVE_TIMEOUT_MS = 30 * 60_000;
const CONTENT = 32 * MiB;

describeLive(
  skipReason ? `live managed disks (skipped: ${skipReason})` : "live managed-disk scenario",
  () => {
    let engine: Engine;
    let compute: ComputeManagementClient;
    let group: { subscription: string; name: string };
    const credential = new DefaultAzureCredential();
    const poll = { updateIntervalInMs: 2000 };
    const tablePrefix = uniqueName("ddlivemd");
    const backupContainer = uniqueName("ddlivemd");
    const sourceName = uniqueName("ddlive-src-");
    const diskId = uniqueName("livemd");
    const restoredId = `${diskId}-r`;

    beforeAll(async () => {
      const m = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)$/i.exec(process.env[GROUP_VAR]!.trim());
      if (!m) throw new Error(`${GROUP_VAR} must be /subscriptions/<id>/resourceGroups/<name>`);
      group = { subscription: m[1], name: m[2] };
      compute = new ComputeManagementClient(credential, group.subscription);
      const lineage = process.env[LINEAGE_VAR]?.trim();
      engine = await openEngine(silentLogger, {
        ...(lineage
          ? /^https?:/i.test(lineage)
            ? { AzureWebJobsStorage__tableServiceUri: lineage }
            : { AzureWebJobsStorage: lineage }
          : { AzureWebJobsStorage: testStorage().webJobsStorage }),
        DISKDELTA_TABLE_PREFIX: tablePrefix,
        ...(process.env.STORAGE_ACCOUNT_KEYS
          ? { STORAGE_ACCOUNT_KEYS: process.env.STORAGE_ACCOUNT_KEYS }
          : {}),
        ...(process.env.DISKDELTA_ARM_ENDPOINT
          ? { DISKDELTA_ARM_ENDPOINT: process.env.DISKDELTA_ARM_ENDPOINT }
          : {}),
      });
    }, LIVE_TIMEOUT_MS);

    afterAll(async () => {
      if (!engine) return;
      const left: string[] = [];
      const attempt = async (what: string, op: () => Promise<unknown>) => {
        try {
          await op();
        } catch (err) {
          left.push(`${what}: ${(err as Error).message.split("\n")[0]}`);
        }
      };
      for await (const s of compute.snapshots.listByResourceGroup(group.name)) {
        const tag = s.tags?.diskdeltadisk;
        if (s.name && (tag === diskId || tag === restoredId))
          await attempt(`delete snapshot ${s.id}`, () => compute.snapshots.delete(group.name, s.name!, poll));
      }
      for (const name of [restoredId, sourceName])
        await attempt(`delete disk ${name}`, () => compute.disks.delete(group.name, name, poll));
      const backup = parseAccountUrl(process.env[BACKUP_VAR]!.trim(), BACKUP_VAR);
      const key = engine.config.accountKeys.get(backup.account);
      const svc = new BlobServiceClient(
        backup.serviceUrl,
        key ? new StorageSharedKeyCredential(backup.account, key) : engine.credentials.identity(),
      );
      await attempt(`delete container ${backupContainer}`, () =>
        svc.getContainerClient(backupContainer).deleteIfExists(),
      );
      const storage = engine.config.storage!;
      for (const t of ["Disks", "Runs", "Points", "Progress"])
        await attempt(`delete table ${tablePrefix}${t}`, () =>
          (storage.kind === "connectionString"
            ? TableClient.fromConnectionString(storage.connectionString, `${tablePrefix}${t}`)
            : new TableClient(storage.tableServiceUri, `${tablePrefix}${t}`, engine.credentials.identity())
          ).deleteTable(),
        );
      await engine.close();
      if (left.length)
        console.warn(
          `live managed-disk cleanup left something behind; delete it by hand:\n  ${left.join("\n  ")}`,
        );
    }, LIVE_TIMEOUT_MS);

    /** A disk's or snapshot's bytes through a read SAS of its own (revoked after). */
    async function exported(kind: "disks" | "snapshots", name: string) {
      const ops = kind === "disks" ? compute.disks : compute.snapshots;
      const { accessSAS } = await ops.grantAccess(
        group.name,
        name,
        { access: "Read", durationInSeconds: 3600 },
        poll,
      );
      try {
        return await readImage(new PageBlobClient(accessSAS!, new AnonymousCredential()));
      } finally {
        await ops.revokeAccess(group.name, name, poll);
      }
    }

    test(
      "upload, full backup, an unchanged incremental by the service diff, restore as a managed disk and its unchanged backup",
      async () => {
        // The user's disk: an upload of a VHD with data in two places.
        await compute.disks.createOrUpdate(
          group.name,
          sourceName,
          {
            location: process.env[LOCATION_VAR]!.trim(),
            sku: { name: "Standard_LRS" },
            creationData: { createOption: "Upload", uploadSizeBytes: CONTENT + 512 },
          },
          poll,
        );
        const { accessSAS } = await compute.disks.grantAccess(
          group.name,
          sourceName,
          { access: "Write", durationInSeconds: 3600 },
          poll,
        );
        const upload = new PageBlobClient(accessSAS!, new AnonymousCredential());
        await upload.uploadPages(crypto.randomBytes(MiB), 0, MiB);
        await upload.uploadPages(crypto.randomBytes(64 * 1024), 20 * MiB, 64 * 1024);
        await upload.uploadPages(fixedVhdFooter(CONTENT), CONTENT, 512);
        await compute.disks.revokeAccess(group.name, sourceName, poll);
        const sourceId = (await compute.disks.get(group.name, sourceName)).id!;

        await addDisk(engine, {
          id: diskId,
          source: sourceId,
          backupAccount: process.env[BACKUP_VAR]!.trim(),
          backupContainer,
        });
        const full = await backupDisk(engine, diskId, { trigger: "cli" });
        expect(full).toMatchObject({ state: "succeeded", kind: "full", detection: "valid-ranges" });
        expect(full.bytesCopied).toBe(MiB + 64 * 1024 + 512);
        const backup = parseAccountUrl(process.env[BACKUP_VAR]!.trim(), BACKUP_VAR);
        const key = engine.config.accountKeys.get(backup.account);
        const backupBlob = new BlobServiceClient(
          backup.serviceUrl,
          key ? new StorageSharedKeyCredential(backup.account, key) : engine.credentials.identity(),
        )
          .getContainerClient(backupContainer)
          .getPageBlobClient(diskId);
        const point = (await engine.lineage.getPoint(diskId, full.restorePoint!))!;
        const pointImage = await readImage(backupBlob.withSnapshot(point.backupSnapshot));
        expectSameImage(
          pointImage,
          await exported("snapshots", full.sourceSnapshot!.split("/").pop()!),
          "full point",
        );

        const again = await backupDisk(engine, diskId, { trigger: "cli" });
        expect(again).toMatchObject({ state: "unchanged", detection: "service-diff", bytesCopied: 0 });

        const r = await restoreAsManagedDisk(engine, diskId, { name: restoredId });
        expect(r.footer).toBe("kept");
        expectSameImage(await exported("disks", restoredId), pointImage, "restored disk");
        const restoredRun = await backupDisk(engine, restoredId, { trigger: "cli" });
        expect(restoredRun).toMatchObject({ state: "unchanged", bytesCopied: 0 });

        // Only the bases are left, and no SAS is open on them.
        for (const id of [diskId, restoredId]) {
          const base = (await engine.lineage.getDisk(id))!.baseSnapshot!;
          const snap = await compute.snapshots.get(group.name, base.split("/").pop()!);
          expect(snap.diskState).not.toBe("ActiveSAS");
        }
      },
      LIVE_TIMEOUT_MS,
    );
  },
);
