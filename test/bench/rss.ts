/**
 * Memory sampling for the benchmark: the peak resident set size of this process over an interval,
 * sampled on a timer, next to the kernel's own high-water mark (`resourceUsage().maxRSS`, which
 * also catches spikes between samples but never goes down, so it covers the process's whole life).
 * Both are reported because a timer on a busy event loop can miss a short spike, and the kernel's
 * mark cannot be reset to isolate one phase.
 *
 * The kernel's mark is read from /proc/self/status (VmHWM), not from `resourceUsage().maxRSS`: on
 * Linux a spawned child's maxRSS starts at its parent's RSS at the fork (the kernel carries the
 * high-water mark of the pre-exec address space over exec), so a child forked by a process holding
 * Azurite's blobs would report Azurite's memory. VmHWM belongs to the child's own address space.
 */
import fs from "node:fs";

export const MiB = 1024 * 1024;

/**
 * 10 ms between samples: a 4 MiB Put Page takes tens of milliseconds on Azurite, so a buffer that
 * lives for one chunk is seen at least once, while sampling stays far below 1% of a core.
 */
const SAMPLE_MS = 10;

export interface RssPeak {
  /** RSS when sampling started, MiB. */
  startMiB: number;
  /** Highest sampled RSS, MiB. */
  peakMiB: number;
  /** Highest sampled heapUsed + external (JS objects and Buffers), MiB. */
  peakHeapAndBuffersMiB: number;
  /** The kernel's high-water mark of this address space so far (VmHWM), MiB. */
  maxRssMiB: number;
}

export function rssMiB(): number {
  return process.memoryUsage.rss() / MiB;
}

/**
 * The kernel's high-water mark of this address space: VmHWM where /proc exists, else maxRSS (which,
 * in a spawned child, may include the parent's memory; see above). Both are in KiB.
 */
export function maxRssMiB(): number {
  try {
    const match = /^VmHWM:\s*(\d+)\s*kB/m.exec(fs.readFileSync("/proc/self/status", "utf8"));
    if (match) return Number(match[1]) / 1024;
  } catch {
    // No /proc (macOS, Windows): fall through.
  }
  return process.resourceUsage().maxRSS / 1024;
}

/**
 * Resets the kernel's high-water mark to the current RSS (writing 5 to /proc/self/clear_refs,
 * Linux 4.0+), so that VmHWM afterwards covers what follows only. False where that is not possible.
 */
export function resetMaxRss(): boolean {
  try {
    fs.writeFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

export class RssSampler {
  private readonly startMiB = rssMiB();
  private peak = this.startMiB;
  private peakHeap = 0;
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.sample();
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref();
  }

  private sample(): void {
    const m = process.memoryUsage();
    this.peak = Math.max(this.peak, m.rss / MiB);
    this.peakHeap = Math.max(this.peakHeap, (m.heapUsed + m.external) / MiB);
  }

  stop(): RssPeak {
    clearInterval(this.timer);
    this.sample();
    return {
      startMiB: this.startMiB,
      peakMiB: this.peak,
      peakHeapAndBuffersMiB: this.peakHeap,
      maxRssMiB: maxRssMiB(),
    };
  }
}
