/** The source port (port.ts) and its kinds: page blob (pageBlob.ts) and managed disk (managedDisk.ts); tagged snapshots. */
export * from "./port";
export * from "./pageBlob";
export * from "./tagged";
export * from "./catalog";
export * from "./managedDisk";
export * from "./armErrors";
