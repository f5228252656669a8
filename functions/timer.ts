/**
 * Timer trigger: on the schedule in the DISKDELTA_SCHEDULE app setting, requests a backup of every
 * disk that is due (lib/app/timer.ts). Guarantees nothing beyond onTimer's: this file only adapts
 * the host's invocation to it, so tests call `backupTimer` directly without a host.
 */
import type { InvocationContext, Timer } from "@azure/functions";
import { defineFunctions } from "../lib/app/register";
import { appFor } from "../lib/compose/runtime";
import { onTimer } from "../lib/app/timer";

export async function backupTimer(timer: Timer, context: InvocationContext): Promise<void> {
  const app = await appFor(context);
  // Per-disk failures are logged by onTimer and must not fail the tick: the other disks were
  // queued, and a failed disk is still due at the next tick.
  await onTimer(app, timer, app.log);
}

export const functions = defineFunctions([
  // `%…%` is resolved from app settings by the host, so the schedule changes without a deploy.
  { kind: "timer", name: "backupTimer", schedule: "%DISKDELTA_SCHEDULE%", handler: backupTimer },
]);
