// Role assignments on a storage account that may live in another resource group or subscription
// (source accounts of the disks, or an existing backup account). main.bicep deploys this module
// at that account's resource group; azuredeploy.json has the same template inline in a nested
// deployment.
targetScope = 'resourceGroup'

@description('Name of the existing storage account in this resource group.')
param storageAccountName string

@description('Principal id of the managed identity that gets the roles.')
param principalId string

@description('Built-in role definition ids (GUIDs) to assign on the account.')
param roleDefinitionIds array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in roleDefinitionIds: {
    name: guid(account.id, principalId, roleId)
    scope: account
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]
