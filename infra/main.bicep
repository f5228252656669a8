// diskdelta: one deployment per subscription (resource group scope).
// The same deployment exists as ARM JSON in azuredeploy.json (no Bicep CLI in the build);
// test/unit/infra.test.ts keeps the two in step: see infra/README.md.
targetScope = 'resourceGroup'

@description('Azure region of every resource (Flex Consumption must be available there).')
param location string = resourceGroup().location

@description('Prefix of resource names: 3-11 lowercase letters and digits (storage account names are built from it).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'diskdelta'

@description('Disks to protect: [{ id, source, sourceAccountId?, backupContainer?, backupBlob?, intervalMinutes?, retention? }]. source is a page blob URL, with sourceAccountId the resource id of its storage account (the identity gets its storage role there), or a managed disk resource id /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/disks/<name> (the identity gets the disk roles on that resource group). retention is { keepLast, keepDaily, keepWeekly, keepMonthly }; each count it leaves out comes from the retention parameter. May be empty: register disks later with POST /api/disks.')
param disks array = []

@description('NCRONTAB (sec min hour day month weekday) of the backup timer (DISKDELTA_SCHEDULE).')
param schedule string = '0 0 */12 * * *'

@description('Interval in minutes that the schedule means: the no-heartbeat alert fires when no timer tick arrived for about twice this (at most two days); the alerts look back as far.')
@minValue(5)
param defaultIntervalMinutes int = 720

@description('Retention of the disks registered from this deployment, where a disk gives no count of its own: { keepLast, keepDaily, keepWeekly, keepMonthly }, as POST /api/disks takes it. The default is what the app itself gives a disk registered without retention.')
param retention object = { keepLast: 14, keepDaily: 0, keepWeekly: 4, keepMonthly: 12 }

@description('Resource id of an existing backup storage account; empty creates one (Standard, blob soft delete).')
param existingBackupAccountId string = ''

@description('E-mail address for alerts; empty creates the alert rules without an action group (they still show in the portal).')
param alertEmail string = ''

var suffix = uniqueString(resourceGroup().id)
var appStorageName = take('${namePrefix}app${suffix}', 24)
var newBackupName = take('${namePrefix}bak${suffix}', 24)
var createBackup = empty(existingBackupAccountId)
// A placeholder id keeps split() valid when no existing account is given (the deployment using it is skipped).
var backupIdParts = split(createBackup ? '${resourceGroup().id}/providers/Microsoft.Storage/storageAccounts/none' : existingBackupAccountId, '/')
var backupAccountName = createBackup ? newBackupName : backupIdParts[8]
var backupAccountUrl = 'https://${backupAccountName}.blob.${environment().suffixes.storage}'
var backupContainer = 'diskdelta' // DEFAULT_BACKUP_CONTAINER in lib/backup/disks.ts
var deploymentContainer = 'app-package'
var tablePrefix = 'diskdelta' // DISKDELTA_TABLE_PREFIX
// QUEUES in lib/app/queues.ts, and the poison queue the host moves a message to after maxDequeueCount.
var queueNames = [
  'diskdelta-backup-requests'
  'diskdelta-backup-requests-poison'
  'diskdelta-chunks'
  'diskdelta-chunks-poison'
  'diskdelta-restore-requests'
  'diskdelta-restore-requests-poison'
]
// The lineage tables and the fan-out progress table (lib/engine.ts: `${prefix}Disks` …).
var tableNames = [
  '${tablePrefix}Disks'
  '${tablePrefix}Runs'
  '${tablePrefix}Points'
  '${tablePrefix}Progress'
]
// A disk's source is a managed disk when it is a resource id (/subscriptions/…), a page blob when it
// is a URL. POST /api/disks checks each one further when register-disks.sh sends it.
var managedDisks = filter(disks, d => startsWith(toLower(d.source), '/subscriptions/'))
var pageBlobDisks = filter(disks, d => !startsWith(toLower(d.source), '/subscriptions/'))
// union() drops duplicates: several disks in one account get one set of role assignments.
var sourceAccountIds = union(map(pageBlobDisks, d => d.sourceAccountId), [])
// The resource group of each managed disk, read from its id (/subscriptions/<sub>/resourceGroups/<rg>/…),
// lowercased because ids are case-insensitive and union() is not: one set of roles per group.
var diskResourceGroupIds = union(map(managedDisks, d => toLower('/subscriptions/${split(d.source, '/')[2]}/resourceGroups/${split(d.source, '/')[4]}')), [])
// The granularities a log search alert's windowSize accepts, in minutes (the API refuses any other):
// the timer alerts use the smallest that spans two schedule intervals, at most two days (the
// longest a log search alert looks back), and are evaluated at most hourly.
var alertWindows = [
  { minutes: 5, iso: 'PT5M' }
  { minutes: 10, iso: 'PT10M' }
  { minutes: 15, iso: 'PT15M' }
  { minutes: 30, iso: 'PT30M' }
  { minutes: 45, iso: 'PT45M' }
  { minutes: 60, iso: 'PT1H' }
  { minutes: 120, iso: 'PT2H' }
  { minutes: 180, iso: 'PT3H' }
  { minutes: 240, iso: 'PT4H' }
  { minutes: 300, iso: 'PT5H' }
  { minutes: 360, iso: 'PT6H' }
  { minutes: 1440, iso: 'P1D' }
  { minutes: 2880, iso: 'P2D' }
]
var tickWindow = first(filter(alertWindows, w => w.minutes >= min(2 * defaultIntervalMinutes, 2880)))
var tickAlertFrequency = tickWindow.minutes < 60 ? tickWindow.iso : 'PT1H'

// Built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles,
// the storage, monitor and compute pages).
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  diskBackupReader: '3e5e47e6-65f7-47ef-90b5-e5dd4d455f24' // Disk Backup Reader
  diskSnapshotContributor: '7efff54f-a5b4-42b5-a1c5-5411624893ce' // Disk Snapshot Contributor
  diskRestoreOperator: 'b50d9833-a0cb-478e-945f-707fcc997c13' // Disk Restore Operator
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-id-${suffix}'
  location: location
}

// ---- the app's own storage: host state, queues, lineage tables, deployment package ----
resource appStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: appStorageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false // identities only: no key exists that could leak
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource deploymentPackage 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  name: '${appStorage.name}/default/${deploymentContainer}'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for q in queueNames: {
    name: '${appStorage.name}/default/${q}'
  }
]

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for t in tableNames: {
    name: '${appStorage.name}/default/${t}'
  }
]

// Flex Consumption and the host (timer leases, keys in azure-webjobs-* containers it creates)
// need Storage Blob Data Owner on the account, not only on the deployment container.
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appStorage.id, identity.id, roles.storageBlobDataOwner)
  scope: appStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner) // Storage Blob Data Owner
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Queue triggers and the fan-out sender: read, write, delete messages.
resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appStorage.id, identity.id, roles.storageQueueDataContributor)
  scope: appStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor) // Storage Queue Data Contributor
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Lineage tables: ETag-guarded reads and writes of disks, runs, restore points.
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appStorage.id, identity.id, roles.storageTableDataContributor)
  scope: appStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor) // Storage Table Data Contributor
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---- backup storage ----
resource backupStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = if (createBackup) {
  name: newBackupName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource backupBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = if (createBackup) {
  parent: backupStorage
  name: 'default'
  properties: {
    // Soft delete: a deleted backup blob or restore point can be undeleted for 14 days.
    deleteRetentionPolicy: { enabled: true, days: 14 }
    containerDeleteRetentionPolicy: { enabled: true, days: 14 }
  }
}

resource backupContainerResource 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (createBackup) {
  parent: backupBlobService
  name: backupContainer
}

// Backup account: Put Page, clear, snapshot the backup blob, delete expired restore points, and a
// user delegation key to read restore points server-side: Storage Blob Data Contributor.
resource backupBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (createBackup) {
  name: guid(resourceId('Microsoft.Storage/storageAccounts', newBackupName), identity.id, roles.storageBlobDataContributor)
  scope: backupStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor) // Storage Blob Data Contributor
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

module existingBackupAccess 'modules/storageRoles.bicep' = if (!createBackup) {
  name: 'diskdelta-backup-${uniqueString(existingBackupAccountId)}'
  scope: resourceGroup(backupIdParts[2], backupIdParts[4])
  params: {
    storageAccountName: backupIdParts[8]
    principalId: identity.properties.principalId
    roleDefinitionIds: [roles.storageBlobDataContributor] // Storage Blob Data Contributor
  }
}

// Source accounts: Snapshot Blob is a write (blobs/write), deleting the superseded base snapshot is
// blobs/delete, and server-side copy needs a user delegation key: Storage Blob Data Reader cannot
// do any of these, so Storage Blob Data Contributor, at the account (user delegation keys are
// granted only at account scope or above).
module sourceAccess 'modules/storageRoles.bicep' = [
  for accountId in sourceAccountIds: {
    name: 'diskdelta-source-${uniqueString(accountId)}'
    scope: resourceGroup(split(accountId, '/')[2], split(accountId, '/')[4])
    params: {
      storageAccountName: split(accountId, '/')[8]
      principalId: identity.properties.principalId
      roleDefinitionIds: [roles.storageBlobDataContributor] // Storage Blob Data Contributor
    }
  }
]

// Managed disks, on each disk's resource group (in any subscription of the tenant): Disk Backup
// Reader reads the disk (size, kind, the source of its snapshots); Disk Snapshot Contributor makes
// the run's incremental snapshots there, tags, lists, opens (read SAS), closes and deletes them;
// Disk Restore Operator creates the disk a restore writes (createOption Upload). The built-in roles
// Azure Backup uses for the same work, narrower than Contributor; see infra/README.md for what they
// leave out.
module managedDiskAccess 'modules/resourceGroupRoles.bicep' = [
  for rgId in diskResourceGroupIds: {
    name: 'diskdelta-disks-${uniqueString(rgId)}'
    scope: resourceGroup(split(rgId, '/')[2], split(rgId, '/')[4])
    params: {
      principalId: identity.properties.principalId
      roleDefinitionIds: [roles.diskBackupReader, roles.diskSnapshotContributor, roles.diskRestoreOperator] // Disk Backup Reader, Disk Snapshot Contributor, Disk Restore Operator
    }
  }
]

// ---- monitoring ----
resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-log-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true // only Entra-authenticated telemetry is accepted
  }
}

// Entra-authenticated ingestion: despite its name this role publishes all telemetry.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher) // Monitoring Metrics Publisher
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'diskdelta-run-history')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'diskdelta run history'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: loadTextContent('workbook.json')
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-alerts-${suffix}'
  location: 'global'
  properties: {
    groupShortName: 'diskdelta'
    enabled: true
    emailReceivers: [{ name: 'operator', emailAddress: alertEmail, useCommonAlertSchema: true }]
  }
}

resource failedRunAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-failed-run-${suffix}'
  location: location
  properties: {
    displayName: 'diskdelta: a backup run failed'
    description: 'A diskdelta.runFailed event arrived. The reason column says why; GET /api/disks/{id}/runs/{runId} has the details.'
    severity: 2
    enabled: true
    scopes: [appInsights.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('queries/failedRun.kql')
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [{ name: 'diskId', operator: 'Include', values: ['*'] }]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: false
    actions: { actionGroups: empty(alertEmail) ? [] : [actionGroup.id] }
  }
}

resource staleRestorePointAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-stale-point-${suffix}'
  location: location
  properties: {
    displayName: 'diskdelta: newest restore point older than twice its interval'
    description: 'The latest timer tick reported a disk whose newest restore point is older than twice its backup interval (GET /api/disks says stale). Look at its latest runs and failures in the workbook.'
    severity: 2
    enabled: true
    scopes: [appInsights.id]
    evaluationFrequency: tickAlertFrequency
    // Spans at least one tick: each tick reports every disk (diskdelta.diskStatus).
    windowSize: tickWindow.iso
    criteria: {
      allOf: [
        {
          query: loadTextContent('queries/staleRestorePoint.kql')
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [{ name: 'diskId', operator: 'Include', values: ['*'] }]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: empty(alertEmail) ? [] : [actionGroup.id] }
  }
}

resource noHeartbeatAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-no-heartbeat-${suffix}'
  location: location
  properties: {
    displayName: 'diskdelta: no timer tick (the app is not backing up)'
    description: 'No diskdelta.timerTick arrived for about two schedule intervals: the app is stopped or failing to start, its timer does not fire, it cannot list its disks, or its telemetry does not arrive. No disk is being backed up on schedule.'
    severity: 1
    enabled: true
    scopes: [appInsights.id]
    evaluationFrequency: tickAlertFrequency
    // About two schedule intervals (rounded up to an allowed window, at most two days).
    windowSize: tickWindow.iso
    criteria: {
      allOf: [
        {
          query: loadTextContent('queries/noHeartbeat.kql')
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: empty(alertEmail) ? [] : [actionGroup.id] }
  }
}

// ---- the Function App ----
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${namePrefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: '${namePrefix}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  tags: { 'azd-service-name': 'api' }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${appStorage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'node', version: '22' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      // Flex Consumption sets runtime and version in functionAppConfig; FUNCTIONS_WORKER_RUNTIME
      // and FUNCTIONS_EXTENSION_VERSION are not allowed as app settings there.
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: appStorage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
        { name: 'DISKDELTA_SCHEDULE', value: schedule }
        { name: 'DISKDELTA_TABLE_PREFIX', value: tablePrefix }
      ]
    }
  }
  dependsOn: [appBlobOwner, appQueueContributor, appTableContributor, metricsPublisher, deploymentPackage]
}

// POST /api/disks bodies for the disks given here (infra/scripts/register-disks.sh sends them), in
// the API's own words: this deployment's backup account and container, and retention as an object
// whose counts are the disk's own where it gives them, else the retention parameter's.
output DISK_REGISTRATIONS array = map(disks, d => union({
  id: d.id
  source: d.source
  backupAccount: backupAccountUrl
  backupContainer: contains(d, 'backupContainer') ? d.backupContainer : backupContainer
  retention: union(retention, contains(d, 'retention') ? d.retention : {})
}, contains(d, 'backupBlob') ? { backupBlob: d.backupBlob } : {}, contains(d, 'intervalMinutes') ? { intervalMinutes: d.intervalMinutes } : {}))
output FUNCTION_APP_NAME string = functionApp.name
output FUNCTION_APP_URL string = 'https://${functionApp.properties.defaultHostName}'
output BACKUP_ACCOUNT_URL string = backupAccountUrl
output APP_STORAGE_ACCOUNT string = appStorage.name
output APPLICATIONINSIGHTS_NAME string = appInsights.name
output IDENTITY_CLIENT_ID string = identity.properties.clientId
output WORKBOOK_ID string = workbook.id
