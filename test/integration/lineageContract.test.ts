/** The lineage's one contract (test/contract/lineage.ts) on both stores: tables on the shared Azurite, and memory. */
import { TableClient } from "@azure/data-tables";
import { MemoryLineage, TableLineage, tableNames } from "../../lib/lineage";
import { lineageContract } from "../contract/lineage";
import { testStorage, uniqueName } from "../support/testEnv";

lineageContract("table store on Azurite", async () => {
  const s = testStorage();
  return new TableLineage(
    (name) => TableClient.fromConnectionString(s.webJobsStorage, name, { allowInsecureConnection: true }),
    tableNames(uniqueName("t")),
  );
});

lineageContract("memory store", async () => new MemoryLineage());
