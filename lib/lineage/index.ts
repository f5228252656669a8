/**
 * The lineage module's public face: the record types and the Lineage contract, the table-backed
 * and in-memory stores, and the id helpers whose ordering both rely on. Import from here.
 */
export * from "./types";
export * from "./ids";
export * from "./tableStore";
export * from "./memoryStore";
export * from "./locations";
export * from "./rows";
