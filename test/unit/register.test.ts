/**
 * Inside the Functions worker (which provides the virtual module @azure/functions-core), every
 * spec is registered with @azure/functions as the host needs it: HTTP with function-level keys,
 * queues on the AzureWebJobsStorage connection, the timer with its schedule. Neither the worker nor
 * the host can run here, so both are stood in for by jest module mocks that record the calls.
 */
const calls: Array<[string, string, Record<string, unknown>]> = [];

jest.mock("@azure/functions-core", () => ({}), { virtual: true });
jest.mock("@azure/functions", () => {
  const record = (kind: string) => (name: string, options: Record<string, unknown>) =>
    calls.push([kind, name, options]);
  return { app: { http: record("http"), timer: record("timer"), storageQueue: record("storageQueue") } };
});

import { defineFunctions, underFunctionsWorker, STORAGE_CONNECTION } from "../../lib/app/register";

test("inside the worker every spec is registered with the options the host needs", async () => {
  expect(underFunctionsWorker()).toBe(true);
  const handler = jest.fn();
  const specs = defineFunctions([
    { kind: "http", name: "listDisks", route: "disks", methods: ["GET"], handler },
    { kind: "timer", name: "backupTimer", schedule: "%DISKDELTA_SCHEDULE%", handler },
    { kind: "queue", name: "chunks", queueName: "diskdelta-chunks", handler },
  ]);
  expect(specs).toHaveLength(3);
  expect(calls).toEqual([
    ["http", "listDisks", { route: "disks", methods: ["GET"], authLevel: "function", handler }],
    ["timer", "backupTimer", { schedule: "%DISKDELTA_SCHEDULE%", handler }],
    ["storageQueue", "chunks", { queueName: "diskdelta-chunks", connection: STORAGE_CONNECTION, handler }],
  ]);
});
