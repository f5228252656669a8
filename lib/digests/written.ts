/**
 * The MD5s of bytes a run wrote, window by window, so the digests of the point it seals need not
 * read those windows back (a first backup would otherwise read its whole data a second time).
 *
 * Only a window the run wrote as exactly one part is kept, and only its part's range and MD5:
 * `digestOf` answers for a window whose valid ranges in the sealed point (as listed after the
 * seal) are that one range, and for no other. Why this is the window's digest: the service checked
 * those bytes against the write's transactional MD5 when it stored them; every write of a run
 * carries the source snapshot's bytes at that place, and the backup blob is fenced against any
 * other writer; a window written twice, or holding other data besides the part, or cleared after
 * it, does not match the listing and is read back as before. MD5 is not composable, so a window
 * written in several parts is read back too (a dense disk writes whole windows, a scattered one
 * mostly a piece per window). At most `limit` windows are kept (a few dozen bytes each), so memory
 * stays bounded on any disk: windows past the limit are read back.
 */
import { bufferMd5 } from "../core/md5";
import { WINDOW_SIZE, type PageRange } from "../ranges";

/** 65,536 windows: 256 GiB of data written in one run, about 5 MiB of entries at most. */
const DEFAULT_LIMIT = 65_536;

interface Part {
  start: number;
  end: number;
  /** Undefined: the window was written in more than one part, so it must be read back. */
  md5?: Buffer;
}

export class WrittenWindows {
  private readonly parts = new Map<number, Part>();

  constructor(private readonly limit = DEFAULT_LIMIT) {}

  /**
   * Records that `data` (the bytes of `range`, accepted by the service) was written. A range
   * inside one window reuses the MD5 the storage port remembered from reading it, so a dense
   * disk's windows cost no hashing at all.
   */
  wrote(range: PageRange, data: Buffer): void {
    for (let index = Math.floor(range.start / WINDOW_SIZE); index * WINDOW_SIZE < range.end; index++) {
      const start = Math.max(range.start, index * WINDOW_SIZE);
      const end = Math.min(range.end, (index + 1) * WINDOW_SIZE);
      const seen = this.parts.get(index);
      if (seen) {
        // A second write into the window, even of the same range: no single part is its content.
        seen.md5 = undefined;
        continue;
      }
      if (this.parts.size >= this.limit) continue;
      const whole = start === range.start && end === range.end;
      const md5 = bufferMd5(whole ? data : data.subarray(start - range.start, end - range.start));
      this.parts.set(index, { start, end, md5 });
    }
  }

  /** The digest of window `index` if its valid ranges are exactly the one part this run wrote there. */
  digestOf(index: number, ranges: readonly PageRange[]): Buffer | undefined {
    const part = this.parts.get(index);
    if (!part?.md5 || ranges.length !== 1 || ranges[0].start !== part.start || ranges[0].end !== part.end)
      return undefined;
    return part.md5;
  }
}
