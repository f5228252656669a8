/** The kernel: error kinds, logger and clock, retry, bounded concurrency, secrets. Imports nothing else of the project. */
export * from "./errors";
export * from "./logger";
export * from "./retry";
export * from "./concurrency";
export * from "./secret";
export * from "./md5";
