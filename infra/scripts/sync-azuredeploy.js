#!/usr/bin/env node
// Copies into infra/azuredeploy.json the files main.bicep loads with loadTextContent (the workbook
// and the alert queries), the table names and the built-in role ids, so the ARM JSON twin cannot
// drift from them. Everything else in azuredeploy.json is written by hand (no Bicep CLI here). Run it
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
// `var roles = { key: '<guid>' // Role Name ... }`: one role a line, as main.bicep writes them.
const bicepRoles = /var roles = \{([\s\S]*?)\n\}/.exec(read("main.bicep"))[1];
template.variables.roles = Object.fromEntries(
  [...bicepRoles.matchAll(/^\s+(\w+): '([0-9a-f-]{36})'/gm)].map((m) => [m[1], m[2]]),
);
fs.writeFileSync(file, JSON.stringify(template, null, 2) + "\n");
console.log(
  "infra/azuredeploy.json: workbook, alert queries, table names and role ids copied from the Bicep sources",
);
