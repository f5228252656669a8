/**
 * Running the compiled scripts of dist/ as real processes, the way the process tests do: exactly
 * the environment given (plus PATH and HOME, so nothing leaks in from the developer's shell), the
 * output captured, and every run checked for account keys, which must never be printed.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { testStorage } from "./testEnv";

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Every key the test storage knows; none may appear in any output. */
export function knownKeys(): string[] {
  return Object.values(testStorage().keys);
}

export function expectNoKeys(result: Result, keys: string[], what: string): void {
  for (const key of keys) {
    // Report which output leaked, never the key itself.
    if (result.stdout.includes(key)) throw new Error(`an account key appeared on stdout of ${what}`);
    if (result.stderr.includes(key)) throw new Error(`an account key appeared on stderr of ${what}`);
  }
  expect(`${result.stdout}${result.stderr}`).not.toMatch(/AccountKey=/i);
}

export interface RunOptions {
  /** Working directory; default this process's. */
  cwd?: string;
  /** HOME of the child; default this process's. */
  home?: string;
  /** More strings that must not appear in the output, besides the test storage's keys. */
  secrets?: string[];
}

/** Runs `node <script> <args>` with exactly `env` (plus PATH and HOME); rejects if a key leaked. */
export function runScript(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  options: RunOptions = {},
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? "", HOME: options.home ?? process.env.HOME ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      const result = { code, stdout, stderr };
      try {
        expectNoKeys(
          result,
          [...knownKeys(), ...(options.secrets ?? [])],
          `${path.basename(script)} ${args.join(" ")}`,
        );
        resolve(result);
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** The JSON a successful --json command printed; a failed one throws with its stderr. */
export function json<T>(result: Result): T {
  if (result.code !== 0) throw new Error(`exit ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}
