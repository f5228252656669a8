/**
 * Fan-out without a host: the app's queue sender records messages and the test delivers them,
 * which lets it deliver every message twice, finish the last batches at the same instant, and
 * kill planning half-way. Each run must seal exactly once, byte-identical to its source snapshot.
 */
import {
  handleBackupRequest,
  handleChunkMessage,
  handlePoisonMessage,
  requestBackup,
} from "../../lib/app/backups";
import { getRun } from "../../lib/app/api";
import {
  decodeBackupRequest,
  decodeChunkMessage,
  parseMessage,
  poisonQueue,
  QUEUES,
} from "../../lib/queues/messages";
import type { App } from "../../lib/app/context";
import { addDisk } from "../../lib/disks/register";
import type { Engine } from "../../lib/compose";
import {
  backupAccountUrl,
  createDisk,
  expectSameImage,
  MiB,
  readImage,
  seeded,
  serviceClient,
  testEngine,
  writeRandom,
  type TestDisk,
} from "../support/disks";
import { BACKUP_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";
import { startDiffProxy } from "../fixtures/diffProxy";

interface Sent {
  queue: string;
  body: Record<string, unknown>;
}

let engine: Engine;
let app: App;
let sent: Sent[];

beforeAll(async () => {
  engine = await testEngine({
    env: {
      DISKDELTA_SEGMENT_BYTES: String(8 * MiB),
      // Anything over 1 MiB fans out, two chunks per message: small disks make many batches.
      DISKDELTA_FANOUT_BYTES: String(MiB),
      DISKDELTA_BATCH_CHUNKS: "2",
    },
  });
});
afterAll(() => engine.close());
beforeEach(() => {
  sent = [];
  app = {
    ...engine,
    queues: { send: async (queue, body) => void sent.push({ queue, body: body as Record<string, unknown> }) },
  };
});

function take(queue: string): Record<string, unknown>[] {
  const mine = sent.filter((s) => s.queue === queue).map((s) => s.body);
  sent = sent.filter((s) => s.queue !== queue);
  return mine;
}

async function registered(size: number, baseUrl?: string): Promise<{ id: string; disk: TestDisk }> {
  const disk = await createDisk(size, baseUrl);
  const id = uniqueName("f");
  await addDisk(engine, { id, source: disk.url, backupAccount: backupAccountUrl(baseUrl) });
  return { id, disk };
}

async function expectSealedAndIdentical(id: string, runId: string, disk: TestDisk) {
  const run = (await engine.lineage.getRun(id, runId))!;
  expect(run.state).toBe("succeeded");
  const points = await engine.lineage.listPoints(id);
  expect(points.filter((p) => p.runId === runId)).toHaveLength(1);
  const backups: string[] = [];
  for await (const b of serviceClient(BACKUP_ACCOUNT)
    .getContainerClient("diskdelta")
    .listBlobsFlat({ includeSnapshots: true, includeMetadata: true, prefix: id })) {
    if (b.snapshot && b.metadata?.diskdeltarun === runId) backups.push(b.snapshot);
  }
  expect(backups).toHaveLength(1); // one seal, one backup snapshot
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(id);
  expectSameImage(
    await readImage(backup.withSnapshot(run.backupSnapshot!)),
    await readImage(disk.client.withSnapshot(run.sourceSnapshot!)),
    runId,
  );
  return run;
}

test("a large change set fans out; every message delivered twice (and the last batches at once) still seals once, byte-identical", async () => {
  // Through the diff fixture, so the incremental cycle is a service diff (on plain Azurite it would
  // be a compare, which applies the differences inline as it reads them).
  const proxy = await startDiffProxy({
    target: `http://127.0.0.1:${testStorage().blobPort}`,
    keys: testStorage().keys,
  });
  try {
    await fansOut(await registered(24 * MiB, proxy.url));
  } finally {
    await proxy.close();
  }
});

async function fansOut({ id, disk }: { id: string; disk: TestDisk }) {
  const rng = seeded(31);
  await writeRandom(disk.client, 0, 20 * MiB, rng.bytes);
  for (const cycle of [0, 1]) {
    if (cycle === 1) {
      await writeRandom(disk.client, 3 * MiB, 9 * MiB, rng.bytes);
      await disk.client.clearPages(16 * MiB, 4 * MiB);
    }
    const run = await requestBackup(app, id, "http");
    const [request] = take(QUEUES.backupRequests);
    // The backup request, twice: the second finds the run held or planned and does nothing harmful.
    await Promise.all([
      handleBackupRequest(app, decodeBackupRequest(request)),
      handleBackupRequest(app, decodeBackupRequest(request)),
    ]);
    const batches = take(QUEUES.chunks);
    // Batches of two chunks, packed across segments: the 5 chunks of 20 MiB make 3 (the first
    // chunk is already past the 1 MiB threshold); of [3, 9) MiB the first MiB is copied inline,
    // up to the threshold, and the two chunks after it make one batch.
    expect(batches.map((b) => (b.chunks as unknown[]).length)).toEqual(cycle === 0 ? [2, 2, 1] : [2]);
    const planned = (await engine.lineage.getRun(id, run.id))!;
    expect(planned.mode).toBe("fanout");
    expect(planned.planComplete).toBe("yes");
    expect(planned.batchesTotal).toBe(batches.length);
    // All but the last two, each twice; then the last two (and their duplicates) at the same instant.
    for (const b of batches.slice(0, -2)) {
      await handleChunkMessage(app, decodeChunkMessage(b));
      await handleChunkMessage(app, decodeChunkMessage(b));
    }
    // What GET /api/disks/{id}/runs/{runId} answers: the batches counted so far, before the seal.
    const { progress } = await getRun(app, id, run.id);
    expect(progress.chunksDone).toBeGreaterThan(0);
    expect(progress.chunksDone).toBeLessThan(progress.chunksTotal);
    await Promise.all(
      batches
        .slice(-2)
        .flatMap((b) => [
          handleChunkMessage(app, decodeChunkMessage(b)),
          handleChunkMessage(app, decodeChunkMessage(b)),
        ]),
    );
    const sealed = await expectSealedAndIdentical(id, run.id, disk);
    expect(sealed.kind).toBe(cycle === 0 ? "full" : "incremental");
    expect(sealed.bytesCopied).toBe(cycle === 0 ? 20 * MiB : 6 * MiB);
    expect(sealed.bytesCleared).toBe(cycle === 0 ? 0 : 4 * MiB);
    // Messages that arrive after the seal find nothing to do.
    await handleChunkMessage(app, decodeChunkMessage(batches[0]));
    expect((await engine.lineage.getRun(id, run.id))!.state).toBe("succeeded");
  }
}

test("planning past its time limit checkpoints and continues in a new message", async () => {
  const { id, disk } = await registered(32 * MiB);
  await writeRandom(disk.client, 0, 32 * MiB, seeded(2).bytes);
  const slowApp: App = { ...app, config: { ...app.config, planSeconds: 0 } }; // every segment past the first pauses
  const run = await requestBackup(slowApp, id, "timer");
  let continuations = 0;
  for (let request = take(QUEUES.backupRequests)[0]; request; request = take(QUEUES.backupRequests)[0]) {
    if (parseMessage(request).continuePlan) continuations++;
    await handleBackupRequest(slowApp, decodeBackupRequest(request));
  }
  expect(continuations).toBe(3); // four 8 MiB segments: three pauses
  for (const b of take(QUEUES.chunks)) await handleChunkMessage(slowApp, decodeChunkMessage(b));
  await expectSealedAndIdentical(id, run.id, disk);
});

test("a small change set is copied by the invocation that planned it", async () => {
  const { id, disk } = await registered(8 * MiB);
  await writeRandom(disk.client, 0, 512 * 1024, seeded(4).bytes);
  const run = await requestBackup(app, id, "http");
  await handleBackupRequest(app, decodeBackupRequest(take(QUEUES.backupRequests)[0]));
  expect(take(QUEUES.chunks)).toHaveLength(0);
  const sealed = await expectSealedAndIdentical(id, run.id, disk);
  expect(sealed.mode).toBeUndefined();
});

test("a batch on the poison queue fails its run with a readable reason; the next run succeeds", async () => {
  const { id, disk } = await registered(16 * MiB);
  await writeRandom(disk.client, 0, 16 * MiB, seeded(6).bytes);
  const run = await requestBackup(app, id, "http");
  await handleBackupRequest(app, decodeBackupRequest(take(QUEUES.backupRequests)[0]));
  const batches = take(QUEUES.chunks);
  await handlePoisonMessage(app, poisonQueue(QUEUES.chunks), batches[0]);
  const failed = (await engine.lineage.getRun(id, run.id))!;
  expect(failed.state).toBe("failed");
  expect(failed.error).toMatch(/batch 0 failed on every delivery/);
  expect((await engine.lineage.getDisk(id))!.activeRunId).toBeUndefined();
  // The other batches arrive late: they copy nothing and change nothing.
  for (const b of batches.slice(1)) await handleChunkMessage(app, decodeChunkMessage(b));
  expect((await engine.lineage.getRun(id, run.id))!.state).toBe("failed");
  const next = await requestBackup(app, id, "http");
  await handleBackupRequest(app, decodeBackupRequest(take(QUEUES.backupRequests)[0]));
  for (const b of take(QUEUES.chunks)) await handleChunkMessage(app, decodeChunkMessage(b));
  await expectSealedAndIdentical(id, next.id, disk);
});

test("a planner that dies after sending batches but before its checkpoint: the retry replans, the dead planner's batches are copied but not counted, one seal", async () => {
  const { id, disk } = await registered(16 * MiB);
  await writeRandom(disk.client, 0, 16 * MiB, seeded(12).bytes);
  // One chunk per batch: a segment sends two batches, so the crash can fall between them.
  const oneChunk: App = { ...app, config: { ...app.config, batchChunks: 1 } };
  const run = await requestBackup(oneChunk, id, "http");
  const request = take(QUEUES.backupRequests)[0];
  // The first planner's second send fails like a dropped connection, after one batch went out.
  let sends = 0;
  const flaky: App = {
    ...oneChunk,
    queues: {
      send: async (queue, body) => {
        if (queue === QUEUES.chunks && ++sends === 2)
          throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
        sent.push({ queue, body: body as Record<string, unknown> });
      },
    },
  };
  await expect(handleBackupRequest(flaky, decodeBackupRequest(request))).rejects.toThrow(/socket hang up/);
  const orphans = take(QUEUES.chunks);
  expect(orphans).toHaveLength(1);
  const held = (await engine.lineage.getRun(id, run.id))!;
  expect(held.state).toBe("copying");
  // The host redelivers the request; the new planner starts a new generation from the checkpoint.
  await handleBackupRequest(oneChunk, decodeBackupRequest(request));
  const batches = take(QUEUES.chunks);
  expect(batches).toHaveLength(4);
  const replanned = (await engine.lineage.getRun(id, run.id))!;
  expect(replanned.planGeneration).toBe(2);
  expect(replanned.batchesTotal).toBe(batches.length);
  await handleChunkMessage(app, decodeChunkMessage(orphans[0])); // copied, not counted
  expect((await engine.lineage.getRun(id, run.id))!.state).toBe("copying");
  for (const b of batches) await handleChunkMessage(app, decodeChunkMessage(b));
  await expectSealedAndIdentical(id, run.id, disk);
});

test("runs fence the backup blob: each run's writes carry its own sequence number, and a batch whose fence is stale writes nothing", async () => {
  // Through the diff fixture: the later runs are service diffs, so they fan out too.
  const proxy = await startDiffProxy({
    target: `http://127.0.0.1:${testStorage().blobPort}`,
    keys: testStorage().keys,
  });
  try {
    await fences(await registered(16 * MiB, proxy.url));
  } finally {
    await proxy.close();
  }
});

async function fences({ id, disk }: { id: string; disk: TestDisk }) {
  const backup = serviceClient(BACKUP_ACCOUNT).getContainerClient("diskdelta").getPageBlobClient(id);
  await writeRandom(disk.client, 0, 16 * MiB, seeded(21).bytes);
  const first = await requestBackup(app, id, "http");
  await handleBackupRequest(app, decodeBackupRequest(take(QUEUES.backupRequests)[0]));
  for (const b of take(QUEUES.chunks)) await handleChunkMessage(app, decodeChunkMessage(b));
  const sealed = await expectSealedAndIdentical(id, first.id, disk);
  expect(sealed.fence).toBeGreaterThan(0);
  expect((await backup.getProperties()).blobSequenceNumber).toBe(sealed.fence);

  // The next run fences the blob before its first write.
  await writeRandom(disk.client, 0, 16 * MiB, seeded(22).bytes);
  const second = await requestBackup(app, id, "http");
  await handleBackupRequest(app, decodeBackupRequest(take(QUEUES.backupRequests)[0]));
  const batches = take(QUEUES.chunks);
  expect(batches.length).toBeGreaterThan(1);
  const copying = (await engine.lineage.getRun(id, second.id))!;
  expect(copying.state).toBe("copying");
  expect(copying.fence).toBeGreaterThan(sealed.fence!);
  expect((await backup.getProperties()).blobSequenceNumber).toBe(copying.fence);

  // Someone newer takes the blob (as the next run would) while this run's batches are in flight:
  // its batches are refused by the service, write nothing, and the run fails saying why.
  const before = await readImage(backup);
  await backup.updateSequenceNumber("increment");
  await handleChunkMessage(app, decodeChunkMessage(batches[0]));
  expectSameImage(await readImage(backup), before, "backup blob after a fenced batch");
  const failed = (await engine.lineage.getRun(id, second.id))!;
  expect(failed.state).toBe("failed");
  expect(failed.error).toMatch(/taken over by a newer run/);

  // The run after it fences again and ends byte-identical.
  const third = await requestBackup(app, id, "http");
  await handleBackupRequest(app, decodeBackupRequest(take(QUEUES.backupRequests)[0]));
  for (const b of take(QUEUES.chunks)) await handleChunkMessage(app, decodeChunkMessage(b));
  const last = await expectSealedAndIdentical(id, third.id, disk);
  expect(last.fence).toBeGreaterThan(copying.fence!);
}
