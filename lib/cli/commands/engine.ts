/** The engine's lifetime around one command, and the CLI's logger and progress on stderr. */
import { openEngine, type Engine } from "../../compose";
import type { GlobalOptions } from "../output";
import { stderrLogger } from "../output";
import { ProgressBar } from "../progress";

export async function withEngine<T>(
  opts: GlobalOptions,
  work: (engine: Engine, bar: ProgressBar) => Promise<T>,
): Promise<T> {
  const bar = new ProgressBar();
  const engine = await openEngine(
    stderrLogger(Boolean(opts.verbose), () => bar.done()),
    process.env,
    { role: "cli" },
  );
  try {
    return await work(engine, bar);
  } finally {
    bar.finish();
    await engine.close();
  }
}
