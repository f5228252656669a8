/**
 * The timer trigger on the shared Azurite, called directly without a host: due disks get one
 * claimed run and one backup-requests message each; a disk with an active run is skipped with a
 * log line naming the run; a past-due tick catches up once; a tick racing an HTTP-style request
 * for one disk yields exactly one run.
 */
import { InvocationContext, type Timer } from "@azure/functions";
import { backupTimer } from "../../functions/timer";
import { requestBackup } from "../../lib/app/backups";
import { QUEUED_OWNER } from "../../lib/backup/claim";
import { decodeBackupRequest, QUEUES, type BackupRequestMessage } from "../../lib/queues/messages";
import { useApp } from "../../lib/compose/runtime";
import type { App } from "../../lib/app/context";
import type { Engine } from "../../lib/compose";
import { BusyError, type DiskRecord } from "../../lib/lineage/types";
import { backupAccountUrl, testEngine } from "../support/disks";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

const HOUR = 60 * 60 * 1000;

/**
 * The backup-requests queue has a fixed name, and in the shared Azurite's default account other
 * suites' workers receive from it. This suite keeps its app storage (queues and lineage) in the
 * source account instead, so its peeks see only its own messages and it leaves none for others.
 */
function isolatedAppStorage(): string {
  const s = testStorage();
  const base = (port: number) => `http://127.0.0.1:${port}/${SOURCE_ACCOUNT}`;
  return (
    `DefaultEndpointsProtocol=http;AccountName=${SOURCE_ACCOUNT};AccountKey=${s.keys[SOURCE_ACCOUNT]};` +
    `BlobEndpoint=${base(s.blobPort)};QueueEndpoint=${base(s.queuePort)};TableEndpoint=${base(s.tablePort)};`
  );
}

let engine: Engine;
let app: App;

beforeEach(async () => {
  engine = await testEngine({ env: { AzureWebJobsStorage: isolatedAppStorage() } });
  app = engine;
  useApp(app);
});

afterEach(async () => {
  useApp(undefined);
  await engine.close();
});

/** Registers a disk record; the timer only claims and queues, so no blob has to exist. */
async function addDisk(fields: Partial<DiskRecord> = {}): Promise<DiskRecord> {
  const id = uniqueName("tm");
  return engine.lineage.addDisk({
    id,
    sourceUrl: `http://127.0.0.1:${testStorage().blobPort}/${SOURCE_ACCOUNT}/${id}/disk.vhd`,
    backupAccountUrl: backupAccountUrl(),
    backupContainer: id,
    backupBlob: "disk.vhd",
    createdAt: new Date(Date.now() - 30 * 24 * HOUR).toISOString(),
    ...fields,
  });
}

const ago = (ms: number) => new Date(Date.now() - ms).toISOString();

function timer(isPastDue = false): Timer {
  const now = Date.now();
  return {
    isPastDue,
    schedule: { adjustForDST: false },
    scheduleStatus: {
      last: new Date(now - (isPastDue ? 72 : 12) * HOUR).toISOString(),
      next: new Date(now + 12 * HOUR).toISOString(),
      lastUpdated: new Date(now - 12 * HOUR).toISOString(),
    },
  };
}

interface Tick {
  context: InvocationContext;
  logs: { level: string; message: string }[];
}

/** An invocation context whose log lines are kept, as the host would record them. */
function tickContext(): Tick {
  const logs: Tick["logs"] = [];
  const context = new InvocationContext({
    invocationId: uniqueName("inv"),
    functionName: "backupTimer",
    logHandler: (level, ...args) => logs.push({ level, message: args.map(String).join(" ") }),
  });
  return { context, logs };
}

async function tick(isPastDue = false): Promise<Tick> {
  const t = tickContext();
  await backupTimer(timer(isPastDue), t.context);
  return t;
}

/** This suite's messages on the backup-requests queue for the given disks. */
async function queuedFor(diskIds: string[]): Promise<BackupRequestMessage[]> {
  const queue = engine.queueClient(QUEUES.backupRequests);
  if (!(await queue.exists())) return [];
  const { peekedMessageItems } = await queue.peekMessages({ numberOfMessages: 32 });
  return peekedMessageItems
    .map((m) => decodeBackupRequest(m.messageText))
    .filter((m) => diskIds.includes(m.diskId));
}

test("due disks get a claimed run and a queued request; a recently backed-up disk does not", async () => {
  const never = await addDisk();
  const overdue = await addDisk({ lastSuccessAt: ago(13 * HOUR) });
  const slowLast = await addDisk({ lastSuccessAt: ago(11 * HOUR + 50 * 60 * 1000) }); // took 10 min
  const recent = await addDisk({ lastSuccessAt: ago(2 * HOUR) });
  const perDisk = await addDisk({ lastSuccessAt: ago(13 * HOUR), intervalMinutes: 24 * 60 });

  const { logs } = await tick();

  const dueIds = [never.id, overdue.id, slowLast.id];
  const messages = await queuedFor([...dueIds, recent.id, perDisk.id]);
  expect(messages.map((m) => m.diskId).sort()).toEqual([...dueIds].sort());
  for (const message of messages) {
    expect(message.trigger).toBe("timer");
    const runs = await engine.lineage.listRuns(message.diskId);
    expect(runs.map((r) => r.id)).toEqual([message.runId]);
    expect(runs[0]).toMatchObject({ state: "planned", trigger: "timer", owner: QUEUED_OWNER });
    expect((await engine.lineage.getDisk(message.diskId))?.activeRunId).toBe(message.runId);
  }
  expect(await engine.lineage.listRuns(recent.id)).toEqual([]);
  expect(await engine.lineage.listRuns(perDisk.id)).toEqual([]);
  expect(logs.map((l) => l.message).join("\n")).toMatch(/3 of 5 disks due; queued 3, skipped 0.*failed 0/);
});

test("a disk whose run is still active is skipped with a log line naming the run; the others still go", async () => {
  const busy = await addDisk();
  const free = await addDisk();
  const active = await requestBackup(app, busy.id, "http");

  const { logs } = await tick();

  const skip = logs.find((l) => l.message.includes(`skipped disk ${busy.id}`));
  expect(skip?.message).toContain(`run ${active.id} still active`);
  expect(skip?.level).toBe("warning");
  expect((await engine.lineage.listRuns(busy.id)).map((r) => r.id)).toEqual([active.id]);
  expect((await queuedFor([free.id])).length).toBe(1);
  expect((await queuedFor([busy.id])).map((m) => m.runId)).toEqual([active.id]);
});

test("a disk that cannot be claimed is logged and does not stop the others", async () => {
  const good = await addDisk();
  const broken = await addDisk();
  // A disk deleted between the listing and its claim: requestBackup fails for that disk alone.
  const listDisks = engine.lineage.listDisks.bind(engine.lineage);
  const ghost = { ...broken, id: uniqueName("ghost") };
  app.lineage.listDisks = async () => [...(await listDisks()), ghost];

  const { logs } = await tick();

  expect(logs.find((l) => l.level === "error")?.message).toMatch(
    new RegExp(`disk ${ghost.id}: could not request a backup: disk ${ghost.id} is not registered`),
  );
  expect((await queuedFor([good.id, broken.id])).length).toBe(2);
});

test("a past-due tick after a long outage queues one backup per overdue disk, and the next tick adds none", async () => {
  // Missed three windows: one backup, not three.
  const missed = await addDisk({ lastSuccessAt: ago(3 * 12 * HOUR + HOUR) });
  const first = await tick(true);
  expect(first.logs.some((l) => /past due/.test(l.message))).toBe(true);
  expect((await engine.lineage.listRuns(missed.id)).length).toBe(1);

  // The regular tick right after: the catch-up run is still queued, so the disk is skipped.
  const second = await tick(false);
  const runs = await engine.lineage.listRuns(missed.id);
  expect(runs.length).toBe(1);
  expect(second.logs.map((l) => l.message).join("\n")).toContain(
    `skipped disk ${missed.id}: run ${runs[0].id} still active`,
  );
  expect((await queuedFor([missed.id])).length).toBe(1);
});

test("timer and an HTTP request at the same instant for one disk: one run; the other is busy or a logged skip", async () => {
  const disk = await addDisk({ lastSuccessAt: ago(20 * HOUR) });
  const t = tickContext();
  const [byTimer, byHttp] = await Promise.allSettled([
    backupTimer(timer(), t.context),
    requestBackup(app, disk.id, "http"),
  ]);
  expect(byTimer.status).toBe("fulfilled"); // the timer never fails on a busy disk

  const runs = await engine.lineage.listRuns(disk.id);
  expect(runs.length).toBe(1);
  const messages = await queuedFor([disk.id]);
  expect(messages.map((m) => m.runId)).toEqual([runs[0].id]);

  const log = t.logs.map((l) => l.message).join("\n");
  if (byHttp.status === "fulfilled") {
    expect(byHttp.value.id).toBe(runs[0].id);
    expect(runs[0].trigger).toBe("http");
    expect(log).toContain(`skipped disk ${disk.id}: run ${runs[0].id} still active`);
  } else {
    expect(byHttp.reason).toBeInstanceOf(BusyError);
    expect((byHttp.reason as BusyError).activeRunId).toBe(runs[0].id);
    expect(runs[0].trigger).toBe("timer");
    expect(log).toContain(`queued run ${runs[0].id} of disk ${disk.id} (timer)`);
  }
});
