/** How the CLI names a field: as the option a user types (`--keep-last`), or the argument. */
import type { FieldWords } from "../core/errors";

const OPTIONS: Record<string, string> = {
  id: "the disk id",
  diskId: "the disk id",
  source: "--source",
  vm: "--vm",
  backupAccount: "--backup-account",
  backupContainer: "--backup-container",
  backupBlob: "--backup-blob",
  intervalMinutes: "--interval-minutes",
  "retention.keepLast": "--keep-last",
  "retention.keepDaily": "--keep-daily",
  "retention.keepWeekly": "--keep-weekly",
  "retention.keepMonthly": "--keep-monthly",
  point: "--point",
  name: "--name",
  overwrite: "--overwrite",
  toFile: "--to-file",
  allowDamaged: "--allow-damaged",
  force: "--force",
  limit: "--limit",
  runId: "the run id",
  resourceGroup: "--resource-group",
  sku: "--sku",
  zone: "--zone",
};

export const cliWords: FieldWords = (field) =>
  OPTIONS[field] ?? `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
