/**
 * What a long-running host process (npm start, diskdelta worker) shares: a timestamped log on
 * stdout/stderr, a clean stop on the first SIGINT or SIGTERM (and an immediate exit on the second,
 * for a user who does not want to wait), and the --lease-seconds option's validation.
 */
import type { HostLogger } from "./invocation";

/** A timestamped log; with `toStderr` (a command's --json) every line goes to stderr, so stdout holds only JSON. */
export function consoleLogger(verbose = false, toStderr = false): HostLogger {
  const stamp = () => new Date().toISOString();
  const out = toStderr ? process.stderr : process.stdout;
  return {
    info: (m) => out.write(`[${stamp()}] ${m}\n`),
    warn: (m) => process.stderr.write(`[${stamp()}] warning: ${m}\n`),
    error: (m) => process.stderr.write(`[${stamp()}] error: ${m}\n`),
    debug: verbose ? (m) => out.write(`[${stamp()}] ${m}\n`) : undefined,
  };
}

/** Resolves on the first SIGINT or SIGTERM; a second one exits at once (someone means it). */
export function untilSignal(log: HostLogger): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let received = false;
    const on = (signal: NodeJS.Signals) => {
      if (received) {
        log.warn(`${signal} again: exiting without waiting for invocations under way`);
        process.exit(130);
      }
      received = true;
      log.info(
        `${signal}: stopping — no new work; waiting for invocations under way (${signal} again to exit at once)`,
      );
      resolve(signal);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}

export function leaseOption(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 2)
    throw new Error(`--lease-seconds ${raw} must be an integer of at least 2`);
  return n * 1000;
}
