/**
 * What every CLI command shares for output: the global options, printing JSON (with --json) or a
 * human table on stdout, two-column key/value rows, and the engine's lifetime around one command.
 */
import type { Engine } from "../engine";

export interface GlobalOptions {
  json?: boolean;
  verbose?: boolean;
}

export type WithEngine = <T>(opts: GlobalOptions, work: (e: Engine) => Promise<T>) => Promise<T>;

export function print(opts: GlobalOptions, json: unknown, human: string): void {
  process.stdout.write(opts.json ? `${JSON.stringify(json, null, 2)}\n` : `${human}\n`);
}

/** Keys left-aligned in one column, values in the next. */
export function rows(pairs: Array<[string, string]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}
