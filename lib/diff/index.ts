/** Change detection over the storage port: the listing pipeline (lister.ts) and window compares (compare.ts). */
export * from "./lister";
export * from "./compare";
