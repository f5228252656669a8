/**
 * The lineage module's public face: the record types and the Lineage contract, the table-backed
 * store, and the id helpers whose ordering the store relies on. Import from here, not from the
 * files behind it.
 */
export * from "./types";
export * from "./ids";
export * from "./tableStore";
