/**
 * Progress of long work on stderr. On a terminal: a one-line bar (bytes, position, rate, ETA),
 * redrawn at most ten times a second. Elsewhere (a log file, CI, a host's log): a status line every
 * STATUS_EVERY_MS once the work has lasted that long — phase, bytes done and to do, rate, time so
 * far — as azcopy prints, and nothing for work that ends sooner. The lines come from a timer, not
 * from the reports, so a phase that reports nothing for a while (sealing, the seal's digests) still
 * shows the work is alive. Phases are named as they start with -v.
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
  private drawn = false;
  private last?: ProgressReport;
  private timer?: NodeJS.Timeout;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get isTerminal(): boolean {
    return Boolean(this.stream.isTTY);
  }

  private rate(p: ProgressReport): number {
    const elapsed = (Date.now() - this.started) / 1000;
    return elapsed > 0 ? p.bytesDone / elapsed : 0;
  }

  /** The status line of the latest report, as written where stderr is not a terminal. */
  statusLine(p: ProgressReport): string {
    const fraction = p.size > 0 ? Math.min(1, p.position / p.size) : 1;
    const todo = p.bytesToDo !== undefined ? ` of ${formatBytes(p.bytesToDo)}` : "";
    const cleared = p.bytesCleared ? `, ${formatBytes(p.bytesCleared)} cleared` : "";
    return (
      `status: ${p.phase}, ${(fraction * 100).toFixed(0)}% of the disk (${formatBytes(p.position)} of ${formatBytes(p.size)}), ` +
      `${formatBytes(p.bytesDone)}${todo} copied${cleared}, ${formatBytes(this.rate(p))}/s, ` +
      `${formatDuration((Date.now() - this.started) / 1000)} so far`
    );
  }

  update(p: ProgressReport): void {
    this.last = p;
    if (!this.isTerminal) {
      // One timer for the whole work, ticking every STATUS_EVERY_MS since the work started; it
      // never keeps the process alive.
      if (!this.timer) {
        const write = () => {
          if (this.last) this.stream.write(`${this.statusLine(this.last)}\n`);
        };
        const wait = STATUS_EVERY_MS - ((Date.now() - this.started) % STATUS_EVERY_MS);
        this.timer = setTimeout(() => {
          write();
          this.timer = setInterval(write, STATUS_EVERY_MS).unref();
        }, wait).unref();
      }
      return;
    }
    const now = Date.now();
    if (now - this.lastDraw < 100 && p.position < p.size) return;
    this.lastDraw = now;
    const elapsed = (now - this.started) / 1000;
    const fraction = p.size > 0 ? Math.min(1, p.position / p.size) : 1;
    const width = 24;
    const filled = Math.round(fraction * width);
    const eta = fraction > 0 ? (elapsed / fraction) * (1 - fraction) : NaN;
    const line =
      `${p.phase.padEnd(8)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ` +
      `${formatBytes(p.bytesDone)} copied, ${formatBytes(p.bytesCleared ?? 0)} cleared, ${formatBytes(this.rate(p))}/s, ETA ${formatDuration(eta)}`;
    this.stream.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Clears the bar (so a following line starts clean). */
  done(): void {
    if (this.drawn) this.stream.write("\r\x1b[2K");
    this.drawn = false;
  }

  /** The work is over: no more status lines, and the bar is cleared. */
  finish(): void {
    // clearTimeout and clearInterval cancel either kind.
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.done();
  }

  get latest(): ProgressReport | undefined {
    return this.last;
  }
}
