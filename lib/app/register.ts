/**
 * One description of each function, used twice: registered with the Azure Functions host
 * (`app.http`, `app.timer`, `app.storageQueue`; skipped outside the Functions worker) and exported as `functions` from each file under functions/, where the local host
 * (lib/host) finds them. So the app served locally is the app deployed, trigger for trigger.
 */
import {
  app,
  type HttpRequest,
  type HttpResponseInit,
  type InvocationContext,
  type Timer,
} from "@azure/functions";

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface HttpFunctionSpec {
  kind: "http";
  name: string;
  /** Route under /api, as in function.json: `disks/{id}/runs`. */
  route: string;
  methods: HttpMethod[];
  handler: (request: HttpRequest, context: InvocationContext) => Promise<HttpResponseInit>;
}

export interface TimerFunctionSpec {
  kind: "timer";
  name: string;
  /** NCRONTAB, or `%SETTING%` to read it from an app setting, as the host does. */
  schedule: string;
  handler: (timer: Timer, context: InvocationContext) => Promise<void>;
}

export interface QueueFunctionSpec {
  kind: "queue";
  name: string;
  queueName: string;
  handler: (message: unknown, context: InvocationContext) => Promise<void>;
}

export type FunctionSpec = HttpFunctionSpec | TimerFunctionSpec | QueueFunctionSpec;

/** The app setting naming the storage of the app's queues (identity-based forms use its `__` suffixes). */
export const STORAGE_CONNECTION = "AzureWebJobsStorage";

/**
 * True inside the Azure Functions Node worker, which provides the virtual module
 * `@azure/functions-core`. Elsewhere (tests, the local host) `app.*` would only print a "test
 * mode" warning per function, so registering is skipped; the specs are still returned.
 */
export function underFunctionsWorker(): boolean {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require("@azure/functions-core");
    return true;
  } catch {
    return false;
  }
}

export function defineFunctions(specs: FunctionSpec[]): FunctionSpec[] {
  if (!underFunctionsWorker()) return specs;
  for (const spec of specs) {
    switch (spec.kind) {
      case "http":
        app.http(spec.name, {
          route: spec.route,
          methods: spec.methods,
          authLevel: "function",
          handler: spec.handler,
        });
        break;
      case "timer":
        app.timer(spec.name, { schedule: spec.schedule, handler: spec.handler });
        break;
      case "queue":
        app.storageQueue(spec.name, {
          queueName: spec.queueName,
          connection: STORAGE_CONNECTION,
          handler: spec.handler,
        });
        break;
    }
  }
  return specs;
}
