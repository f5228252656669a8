/** The app's queues: message contract (messages.ts) and the sending port with its two implementations (sender.ts). */
export * from "./messages";
export * from "./sender";
