/**
 * A one-line progress bar on stderr: bytes copied, scan position, rate and ETA. It draws only
 * when stderr is a terminal (scripts and logs get no escape codes) and at most ten times a
 * second, so a fast copy is not slowed by drawing.
 */
import type { Progress } from "../backup/run";

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

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

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get enabled(): boolean {
    return Boolean(this.stream.isTTY);
  }

  update(p: Progress): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && p.position < p.size) return;
    this.lastDraw = now;
    const fraction = p.size > 0 ? Math.min(1, p.position / p.size) : 1;
    const width = 24;
    const filled = Math.round(fraction * width);
    const elapsed = (now - this.started) / 1000;
    const rate = elapsed > 0 ? p.bytesCopied / elapsed : 0;
    const eta = fraction > 0 ? (elapsed / fraction) * (1 - fraction) : NaN;
    const line =
      `${p.phase.padEnd(8)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ` +
      `${formatBytes(p.bytesCopied)} copied, ${formatBytes(p.bytesCleared)} cleared, ${formatBytes(rate)}/s, ETA ${formatDuration(eta)}`;
    this.stream.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  done(): void {
    if (this.drawn) this.stream.write("\r\x1b[2K");
  }
}
