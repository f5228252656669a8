/**
 * The services every use case runs on, as one value built by the composition root (lib/compose):
 * the configuration, a logger and a clock, and the ports — storage (page blobs, already wrapped
 * in the retry policy), lineage (disks, runs, points), and the source of each registered disk.
 * Use cases receive a Deps and never build a client themselves, so a simulation can hand them
 * memory stores, a fault plan and a clock of its own.
 */
import type { Config } from "../config/settings";
import type { Clock, Logger } from "../core/logger";
import type { Lineage } from "../lineage/types";
import type { Sources } from "../sources/port";
import type { PageStore } from "../storage/port";
import type { HostPolicy } from "../storage/urls";

export interface Deps {
  config: Config;
  log: Logger;
  now: Clock;
  storage: PageStore;
  lineage: Lineage;
  /** The source port of each registered disk (page blob or managed disk), and checking a new one. */
  sources: Sources;
  /** Which hosts are storage endpoints (checked before anything is registered). */
  hosts: HostPolicy;
}

/** The same services with another logger (an invocation's, so lines land in its log). */
export function withLogger<D extends Deps>(deps: D, log: Logger): D {
  return { ...deps, log };
}
