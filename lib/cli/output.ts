/**
 * Where the CLI writes: with --json, stdout holds only JSON (one object or array per command, one
 * object per line where a command streams), and everything else — log lines, progress, warnings —
 * goes to stderr; without it, the human text goes to stdout and the rest to stderr as well.
 */
import type { Logger } from "../core/logger";

export interface GlobalOptions {
  json?: boolean;
  verbose?: boolean;
}

export function print(opts: GlobalOptions, json: unknown, human: string): void {
  process.stdout.write(opts.json ? `${JSON.stringify(json, null, 2)}\n` : `${human}\n`);
}

/** One JSON object per line on stdout (streaming commands with --json). */
export function printLine(json: unknown): void {
  process.stdout.write(`${JSON.stringify(json)}\n`);
}

/** Log lines on stderr: warnings always, the steps (info) and errors with -v. */
export function stderrLogger(verbose: boolean, before?: () => void): Logger {
  const write = (line: string) => {
    before?.();
    process.stderr.write(`${line}\n`);
  };
  return {
    info: (m) => {
      if (verbose) write(m);
    },
    warn: (m) => write(`warning: ${m}`),
    error: (m) => {
      if (verbose) write(`error: ${m}`);
    },
  };
}
