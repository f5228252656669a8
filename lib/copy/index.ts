/** Chunk copying over the storage port: streamed or server-side, fenced, idempotent. */
export * from "./copier";
