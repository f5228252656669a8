// Role assignments on a whole resource group that may be in another subscription of the tenant
// (the resource group of managed disks: their snapshots are made there and a restore creates its
// disk there, so the roles cannot be narrowed to one disk). main.bicep deploys this module at that
// resource group; azuredeploy.json has the same template inline in a nested deployment.
targetScope = 'resourceGroup'

@description('Principal id of the managed identity that gets the roles.')
param principalId string

@description('Built-in role definition ids (GUIDs) to assign on this resource group.')
param roleDefinitionIds array

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in roleDefinitionIds: {
    name: guid(resourceGroup().id, principalId, roleId)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]
