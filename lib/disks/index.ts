/** Registering protected disks, finding them, changing them. */
export * from "./register";
