/**
 * MD5 of a buffer, remembered per buffer object: the storage port hashes every body it reads (to
 * check the service's range MD5), and the same buffer is then hashed again for the write's
 * transactional MD5 and for the sealed point's digests. Keyed by the object, so a slice or a copy
 * is hashed afresh; a buffer changed after it was hashed must not be asked again (the service's
 * transactional check would refuse such a write, which is why only read bodies are remembered).
 */
import crypto from "node:crypto";

const remembered = new WeakMap<Buffer, Buffer>();

/** Hashes `data` now and remembers the result for `bufferMd5`. */
export function hashAndRemember(data: Buffer): Buffer {
  const md5 = crypto.createHash("md5").update(data).digest();
  remembered.set(data, md5);
  return md5;
}

/** The MD5 of `data`: the remembered one, or computed now (not remembered). */
export function bufferMd5(data: Buffer): Buffer {
  return remembered.get(data) ?? crypto.createHash("md5").update(data).digest();
}
