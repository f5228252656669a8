/** Settings (every one the code reads, validated into one Config or one ConfigError) and NCRONTAB schedules. */
export * from "./settings";
export * from "./schedule";
