/** The storage port (port.ts), its implementations (azure.ts, memory.ts), retry and faults as wrappers, URLs and hosts, errors. */
export * from "./port";
export * from "./errors";
export * from "./urls";
export * from "./retrying";
