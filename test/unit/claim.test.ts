/**
 * leaseHolds decides whether a run's holder is alive: the lease must not have lapsed, and when the
 * owner is a process on this host, that process must still exist. An owner on another host is
 * trusted until its lease lapses (its pid means nothing here).
 */
import { spawn } from "node:child_process";
import os from "node:os";
import { leaseHolds, ownerId, holderWords, QUEUED_OWNER } from "../../lib/backup/claim";
import type { RunRecord } from "../../lib/lineage/types";

const NOW = new Date("2026-01-15T12:00:00.000Z");

function run(owner: string, leaseUntil: Date): RunRecord {
  return {
    id: "r-1",
    diskId: "d1",
    trigger: "cli",
    kind: "incremental",
    state: "copying",
    startedAt: NOW.toISOString(),
    updatedAt: NOW.toISOString(),
    owner,
    leaseUntil: leaseUntil.toISOString(),
    rangesWritten: 0,
    rangesCleared: 0,
    chunksTotal: 0,
    chunksDone: 0,
    bytesPlanned: 0,
    bytesCopied: 0,
    bytesCleared: 0,
  };
}

const later = (seconds: number) => new Date(NOW.getTime() + seconds * 1000);

/** The pid of a process that existed and has exited (and been reaped), so it is certainly dead now. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", "0"], { stdio: "ignore" });
  const pid = child.pid;
  if (!pid) throw new Error("could not spawn a child process");
  await new Promise<void>((resolve, reject) => {
    child.once("exit", () => resolve());
    child.once("error", reject);
  });
  // After 'exit' node has reaped it; make sure the kernel agrees before relying on it.
  for (let i = 0; i < 50; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return pid;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`pid ${pid} still exists after its exit`);
}

test("ownerId is role@host:pid, and the busy message says who that is in words", () => {
  expect(ownerId()).toBe(`cli@${os.hostname()}:${process.pid}`);
  expect(holderWords(ownerId())).toBe(`a diskdelta command (pid ${process.pid} on this host)`);
  expect(holderWords(QUEUED_OWNER)).toMatch(/the backup queue \(waiting for a worker/);
  expect(holderWords("worker@elsewhere:42")).toBe("a diskdelta worker (pid 42 on elsewhere)");
});

test("a live lease held by this very process holds", () => {
  expect(leaseHolds(run(ownerId(), later(60)), NOW)).toBe(true);
});

test("a lapsed lease does not hold, whoever the owner", () => {
  expect(leaseHolds(run(ownerId(), later(-1)), NOW)).toBe(false);
  expect(leaseHolds(run("other-host:1234", later(-60)), NOW)).toBe(false);
  // The instant the lease ends it no longer holds.
  expect(leaseHolds(run("other-host:1234", NOW), NOW)).toBe(false);
});

test("a live lease held by another live process on this host holds", () => {
  // The parent of jest's worker is alive for the whole test.
  expect(leaseHolds(run(`${os.hostname()}:${process.ppid}`, later(60)), NOW)).toBe(true);
});

test("a live lease whose owner on this host has exited does not hold", async () => {
  const pid = await deadPid();
  expect(leaseHolds(run(`${os.hostname()}:${pid}`, later(60)), NOW)).toBe(false);
  // It stops holding only because of the dead process: the same lease with a live owner holds.
  expect(leaseHolds(run(ownerId(), later(60)), NOW)).toBe(true);
});

test("an owner on another host is trusted until its lease lapses, even with a pid that is dead here", async () => {
  const pid = await deadPid();
  expect(leaseHolds(run(`some-other-host-${os.hostname()}:${pid}`, later(60)), NOW)).toBe(true);
  expect(leaseHolds(run(`some-other-host-${os.hostname()}:${pid}`, later(-60)), NOW)).toBe(false);
});

test("host names containing ':' are split at the last one", async () => {
  const pid = await deadPid();
  expect(leaseHolds(run(`fe80::1:${pid}`, later(60)), NOW)).toBe(true);
});

test("an owner that is not host:pid is judged by its lease alone", () => {
  expect(leaseHolds(run(os.hostname(), later(60)), NOW)).toBe(true);
  expect(leaseHolds(run(`${os.hostname()}:not-a-pid`, later(60)), NOW)).toBe(true);
  expect(leaseHolds(run(`${os.hostname()}:0`, later(60)), NOW)).toBe(true);
  expect(leaseHolds(run(`${os.hostname()}:-1`, later(60)), NOW)).toBe(true);
});
