/** Per-window digests of restore points: format, writing and reading, building at seal, checking. */
export * from "./format";
export * from "./store";
export * from "./seal";
