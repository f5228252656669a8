/**
 * Where the engine says what it does. Three levels, no formatting: adapters (the CLI's stderr,
 * an invocation's log, the Functions host) decide how lines look and which levels show.
 */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const silentLogger: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** The time source every use case reads, so tests and simulations can move it. */
export type Clock = () => Date;

export const systemClock: Clock = () => new Date();

/** "1 restore point", "3 restore points": counts in log lines read as English. */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
