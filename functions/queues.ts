/**
 * Queue triggers: thin adapters that decode a message and call one use case in lib/app/backups.
 * A malformed message throws (the host retries, then moves it to the poison queue, whose trigger
 * fails its run visibly); a retryable storage error is rethrown for the host to retry.
 */
import type { InvocationContext } from "@azure/functions";
import { handleBackupRequest, handleChunkMessage, handlePoisonMessage } from "../lib/app/backups";
import { decodeBackupRequest, decodeChunkMessage, poisonQueue, QUEUES } from "../lib/queues/messages";
import { defineFunctions } from "../lib/app/register";
import { appFor } from "../lib/compose/runtime";

export async function backupRequestTrigger(message: unknown, context: InvocationContext): Promise<void> {
  await handleBackupRequest(await appFor(context), decodeBackupRequest(message));
}

export async function chunkTrigger(message: unknown, context: InvocationContext): Promise<void> {
  await handleChunkMessage(await appFor(context), decodeChunkMessage(message));
}

function poisonTrigger(queue: string) {
  return async (message: unknown, context: InvocationContext): Promise<void> => {
    await handlePoisonMessage(await appFor(context), queue, message);
  };
}

export const backupRequestPoisonTrigger = poisonTrigger(poisonQueue(QUEUES.backupRequests));
export const chunkPoisonTrigger = poisonTrigger(poisonQueue(QUEUES.chunks));

export const functions = defineFunctions([
  { kind: "queue", name: "backupRequests", queueName: QUEUES.backupRequests, handler: backupRequestTrigger },
  { kind: "queue", name: "chunks", queueName: QUEUES.chunks, handler: chunkTrigger },
  {
    kind: "queue",
    name: "backupRequestsPoison",
    queueName: poisonQueue(QUEUES.backupRequests),
    handler: backupRequestPoisonTrigger,
  },
  { kind: "queue", name: "chunksPoison", queueName: poisonQueue(QUEUES.chunks), handler: chunkPoisonTrigger },
]);
