/**
 * The restore-requests queue trigger: runs one restore that the HTTP API checked and queued.
 * Guarantees: a malformed message fails clearly and, retried by the host, ends on the poison
 * queue; a repeated message whose restore already registered its disk is acknowledged without a
 * second copy; a restore that can never succeed is logged with its reason and acknowledged; a
 * transient failure is rethrown so the host retries it (at-least-once delivery); one that fails
 * every delivery reaches the poison queue, whose function logs it as an error naming the request.
 */
import type { InvocationContext } from "@azure/functions";
import { decodeRestoreRequest, poisonQueue, QUEUES } from "../lib/queues/messages";
import { defineFunctions } from "../lib/app/register";
import { handleRestorePoison, handleRestoreRequest } from "../lib/app/restores";
import { appFor } from "../lib/compose/runtime";

export async function restoreRequest(message: unknown, context: InvocationContext): Promise<void> {
  const request = decodeRestoreRequest(message);
  await handleRestoreRequest(await appFor(context), request);
}

export async function restoreRequestPoison(message: unknown, context: InvocationContext): Promise<void> {
  handleRestorePoison(await appFor(context), poisonQueue(QUEUES.restoreRequests), message);
}

export const functions = defineFunctions([
  { kind: "queue", name: "restoreRequests", queueName: QUEUES.restoreRequests, handler: restoreRequest },
  {
    kind: "queue",
    name: "restoreRequestsPoison",
    queueName: poisonQueue(QUEUES.restoreRequests),
    handler: restoreRequestPoison,
  },
]);
