/**
 * The app as its use cases see it: the run's services (storage, lineage, sources, hooks) plus the
 * queues the triggers talk through, and the timer's reporting hook. Built once per process by the
 * composition root (lib/compose) and handed to each trigger; tests build their own.
 */
import type { BackupDeps } from "../backup/run";
import type { QueueSender } from "../queues/sender";
import type { TimerTickReport } from "./timerReport";

export interface App extends BackupDeps {
  queues: QueueSender;
  /**
   * After a timer tick listed the disks and requested the due ones: telemetry (each disk's status
   * and the tick as a heartbeat). Synchronous; when absent, the tick reads nothing extra for it.
   */
  timerTicked?(report: TimerTickReport): void;
}
