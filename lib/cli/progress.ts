/**
 * Progress of long work on stderr. On a terminal: a one-line bar (bytes, position, rate, ETA),
 * redrawn at most ten times a second. Elsewhere (a log file, CI, a host's log): a status line every
 * STATUS_EVERY_MS once the work has lasted that long — phase, bytes done and to do, rate — as
 * azcopy prints, and nothing for work that ends sooner. Phases are named as they start with -v.
 */
import { formatBytes } from "./format";

export { formatBytes };

/** What a progress report says, whatever the work (a backup run, a restore, a verify). */
export interface ProgressReport {
  phase: string;
  /** Offset of the disk below which the work is done, of `size`. */
  position: number;
  size: number;
  /** Bytes moved so far, and (where known) to move in all. */
  bytesDone: number;
  bytesToDo?: number;
  bytesCleared?: number;
}

/** A status line this often where stderr is not a terminal. */
export const STATUS_EVERY_MS = 5000;

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x: number) => String(x).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export class ProgressBar {
  private readonly started = Date.now();
  private lastDraw = 0;
  private lastStatus = Date.now();
  private drawn = false;
  private last?: ProgressReport;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get isTerminal(): boolean {
    return Boolean(this.stream.isTTY);
  }

  update(p: ProgressReport): void {
    this.last = p;
    const now = Date.now();
    const elapsed = (now - this.started) / 1000;
    const rate = elapsed > 0 ? p.bytesDone / elapsed : 0;
    const fraction = p.size > 0 ? Math.min(1, p.position / p.size) : 1;
    if (!this.isTerminal) {
      if (now - this.lastStatus < STATUS_EVERY_MS) return;
      this.lastStatus = now;
      const todo = p.bytesToDo !== undefined ? ` of ${formatBytes(p.bytesToDo)}` : "";
      this.stream.write(
        `status: ${p.phase}, ${(fraction * 100).toFixed(0)}% of the disk (${formatBytes(p.position)} of ${formatBytes(p.size)}), ` +
          `${formatBytes(p.bytesDone)}${todo} copied${p.bytesCleared ? `, ${formatBytes(p.bytesCleared)} cleared` : ""}, ${formatBytes(rate)}/s\n`,
      );
      return;
    }
    if (now - this.lastDraw < 100 && p.position < p.size) return;
    this.lastDraw = now;
    const width = 24;
    const filled = Math.round(fraction * width);
    const eta = fraction > 0 ? (elapsed / fraction) * (1 - fraction) : NaN;
    const line =
      `${p.phase.padEnd(8)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ` +
      `${formatBytes(p.bytesDone)} copied, ${formatBytes(p.bytesCleared ?? 0)} cleared, ${formatBytes(rate)}/s, ETA ${formatDuration(eta)}`;
    this.stream.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Clears the bar (so a following line starts clean). */
  done(): void {
    if (this.drawn) this.stream.write("\r\x1b[2K");
    this.drawn = false;
  }

  get latest(): ProgressReport | undefined {
    return this.last;
  }
}
