#!/usr/bin/env node
// Copies into infra/azuredeploy.json the files main.bicep loads with loadTextContent (the workbook
// and the alert queries), and the table names, so the ARM JSON twin cannot drift from them. Run it
// after editing any of those files, then `npx prettier --write infra/azuredeploy.json`;
// test/unit/infra.test.ts fails until both templates agree.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const infra = path.resolve(__dirname, "..");
const file = path.join(infra, "azuredeploy.json");
const template = JSON.parse(fs.readFileSync(file, "utf8"));
const read = (f) => fs.readFileSync(path.join(infra, f), "utf8");

template.variables.workbookSerializedData = read("workbook.json");
template.variables.failedRunQuery = read("queries/failedRun.kql");
template.variables.staleRestorePointQuery = read("queries/staleRestorePoint.kql");
template.variables.noHeartbeatQuery = read("queries/noHeartbeat.kql");
const bicepTables = /var tableNames = \[([\s\S]*?)\]/.exec(read("main.bicep"))[1];
template.variables.tableNames = [...bicepTables.matchAll(/'\$\{tablePrefix\}(\w+)'/g)].map(
  (m) => `[format('{0}${m[1]}', variables('tablePrefix'))]`,
);
fs.writeFileSync(file, JSON.stringify(template, null, 2) + "\n");
console.log("infra/azuredeploy.json: workbook, alert queries and table names copied from the Bicep sources");
