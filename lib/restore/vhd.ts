/**
 * The 512-byte footer of a fixed VHD (Microsoft's Virtual Hard Disk Image Format Specification,
 * "Hard Disk Footer Format"), which every managed disk's export ends with and every upload to a
 * managed disk must end with: `conectix` cookie, big-endian sizes, disk type 2 (fixed), CHS
 * geometry as the specification's appendix computes it, a one's-complement checksum over the
 * footer without its checksum field. diskdelta writes one only where a restore point has none
 * (a page blob that was not a VHD); a point of a managed disk carries its own.
 */
import crypto from "node:crypto";

export const FOOTER_SIZE = 512;
const COOKIE = "conectix";
const FIXED = 2;
/** VHD timestamps count seconds from 2000-01-01T00:00:00Z. */
const EPOCH = Date.UTC(2000, 0, 1);

/** The geometry of a fixed disk of `size` bytes (the specification's CHS algorithm). */
function geometry(size: number): { cylinders: number; heads: number; sectors: number } {
  const total = Math.min(Math.floor(size / 512), 65535 * 16 * 255);
  let sectors: number;
  let heads: number;
  let cylTimesHeads: number;
  if (total >= 65535 * 16 * 63) {
    sectors = 255;
    heads = 16;
    cylTimesHeads = Math.floor(total / sectors);
  } else {
    sectors = 17;
    cylTimesHeads = Math.floor(total / sectors);
    heads = Math.max(4, Math.floor((cylTimesHeads + 1023) / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectors = 31;
      heads = 16;
      cylTimesHeads = Math.floor(total / sectors);
    }
    if (cylTimesHeads >= heads * 1024) {
      sectors = 63;
      heads = 16;
      cylTimesHeads = Math.floor(total / sectors);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectors };
}

function checksum(footer: Buffer): number {
  let sum = 0;
  for (let i = 0; i < FOOTER_SIZE; i++) if (i < 64 || i >= 68) sum += footer[i];
  return ~sum >>> 0;
}

/** A footer for a fixed VHD whose content is `size` bytes. */
export function fixedVhdFooter(size: number, at: Date = new Date()): Buffer {
  const f = Buffer.alloc(FOOTER_SIZE);
  f.write(COOKIE, 0, "ascii");
  f.writeUInt32BE(0x00000002, 8); // features: the reserved bit, always set
  f.writeUInt32BE(0x00010000, 12); // format version 1.0
  f.writeBigUInt64BE(0xffffffffffffffffn, 16); // data offset: none (fixed disk)
  f.writeUInt32BE(Math.max(0, Math.floor((at.getTime() - EPOCH) / 1000)) >>> 0, 24);
  f.write("ddlt", 28, "ascii"); // creator application
  f.writeUInt32BE(0x00010000, 32); // creator version
  f.write("Wi2k", 36, "ascii"); // creator host OS, as Azure's own tools write
  f.writeBigUInt64BE(BigInt(size), 40); // original size
  f.writeBigUInt64BE(BigInt(size), 48); // current size
  const g = geometry(size);
  f.writeUInt16BE(g.cylinders, 56);
  f.writeUInt8(g.heads, 58);
  f.writeUInt8(g.sectors, 59);
  f.writeUInt32BE(FIXED, 60);
  crypto.randomBytes(16).copy(f, 68); // unique id
  f.writeUInt32BE(checksum(f), 64);
  return f;
}

/** Whether `last` (the final 512 bytes of an image of `size` bytes) is the footer of a fixed VHD of that image. */
export function isFixedVhdFooter(last: Buffer, size: number): boolean {
  if (last.length !== FOOTER_SIZE || size < FOOTER_SIZE) return false;
  if (last.toString("ascii", 0, 8) !== COOKIE) return false;
  if (last.readUInt32BE(60) !== FIXED) return false;
  if (last.readBigUInt64BE(48) !== BigInt(size - FOOTER_SIZE)) return false;
  return last.readUInt32BE(64) === checksum(last);
}
