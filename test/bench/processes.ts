/**
 * The bench's processes, seen from the bench: the storage process (test/bench/storage.ts) and
 * one process per contender run (test/bench/backupChild.ts). Marks of the storage's cumulative
 * request counts are taken while the contender waits at a handshake, so the counts of a run are
 * exactly its own: nothing before it said "ready" (opening the engine, registering, warming up),
 * nothing after its result, and the engine's after-seal hook apart from the run.
 */
import { fork, type ChildProcess } from "node:child_process";
import os from "node:os";
import path from "node:path";
import type { ChildInput, ChildMessage, ChildResult } from "./backupChild";
import { add, emptyCounts, since, type Counts } from "./counting";
import type { StorageEndpoints, StorageReply, StorageRequest } from "./storage";

export interface Mark {
  counts: Counts;
  /** The storage process's CPU time so far, s. */
  cpuSeconds: number;
  rssMiB: number;
}

export interface Storage {
  endpoints: StorageEndpoints;
  mark(): Promise<Mark>;
  close(): Promise<void>;
}

function forked(script: string, env: Record<string, string>, execArgv: string[] = []): ChildProcess {
  return fork(path.join(__dirname, script), [], {
    env: { ...process.env, ...env },
    execArgv,
    // A child's stdout would mix into the bench's table: send it to stderr with the progress lines.
    stdio: ["ignore", 2, "inherit", "ipc"],
  });
}

export async function startStorage(keys: Record<string, string>): Promise<Storage> {
  const child = forked("storage.js", { BENCH_STORAGE: JSON.stringify({ keys }) });
  const waiting = new Map<number, (m: Mark) => void>();
  let nextId = 0;
  const endpoints = await new Promise<StorageEndpoints>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the storage process exited with ${code}`)));
    child.on("message", (m: StorageReply) => {
      if (m.type === "ready") resolve(m.endpoints);
      else waiting.get(m.id)?.({ counts: m.counts, cpuSeconds: m.cpuSeconds, rssMiB: m.rssMiB });
    });
  });
  const request = (m: StorageRequest) => child.send(m);
  return {
    endpoints,
    mark: () =>
      new Promise<Mark>((resolve) => {
        const id = nextId++;
        waiting.set(id, (m) => {
          waiting.delete(id);
          resolve(m);
        });
        request({ type: "counts", id });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        child.removeAllListeners("exit");
        child.once("exit", () => resolve());
        request({ type: "close" });
      }),
  };
}

export interface ContenderRun {
  result: ChildResult;
  /** Requests of the run, the engine's after-seal hook excluded. */
  run: Counts;
  /** Requests of the engine's after-seal hook (digests, retention); empty for the plain loop. */
  afterSeal: Counts;
  /** CPU the storage process spent during the run (after-seal hook excluded), s. */
  storageCpuSeconds: number;
  /** The machine's 1-minute load average when the run started: above the core count, other work competed. */
  loadAverage: number;
}

/** Runs one contender in its own process and counts its requests. */
export function runContender(storage: Storage, input: ChildInput): Promise<ContenderRun> {
  const child = forked("backupChild.js", { BENCH_CHILD: JSON.stringify(input) }, ["--expose-gc"]);
  const marks: Partial<Record<"start" | "sealStart" | "sealEnd" | "end", Mark>> = {};
  let loadAverage = 0;
  return new Promise((resolve, reject) => {
    let done = false;
    child.once("exit", (code) => {
      if (!done) reject(new Error(`the ${input.contender} process exited with ${code} before its result`));
    });
    child.on("message", (m: ChildMessage) => {
      const answer = async () => {
        if (m.type === "ready") {
          loadAverage = os.loadavg()[0];
          marks.start = await storage.mark();
          child.send("go");
        } else if (m.type === "phase") {
          marks[m.phase === "afterSealStarts" ? "sealStart" : "sealEnd"] = await storage.mark();
          child.send("ack");
        } else {
          // Set before the await: the child exits as soon as its result is sent.
          done = true;
          const end = await storage.mark();
          const start = marks.start ?? end;
          const sealStart = marks.sealStart ?? end;
          const sealEnd = marks.sealEnd ?? end;
          const run = add(since(start.counts, sealStart.counts), since(sealEnd.counts, end.counts));
          resolve({
            result: m.result,
            run,
            afterSeal: marks.sealStart ? since(sealStart.counts, sealEnd.counts) : emptyCounts(),
            storageCpuSeconds:
              sealStart.cpuSeconds - start.cpuSeconds + (end.cpuSeconds - sealEnd.cpuSeconds),
            loadAverage,
          });
        }
      };
      answer().catch(reject);
    });
  });
}
