/** The run as a pipeline (run.ts, pipeline.ts, seal.ts), its one state owner (tracker.ts, claim.ts) and its fan-out (fanout.ts). */
export * from "./run";
export * from "./claim";
export * from "./fanout";
export * from "./pipeline";
export * from "./tracker";
export * from "./afterSeal";
