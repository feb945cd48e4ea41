// Everything the service runs on, in one resource group:
//
//   user-assigned identity ──► storage (blob: deployment package + host leases, queues, tables)
//                          ──► Key Vault (secrets, RBAC mode)      ──► Application Insights (Entra ingestion)
//   Flex Consumption plan (FC1) ──► function app (Python 3.11, runs as the identity above)
//
// No shared keys anywhere: storage has them disabled, Application Insights accepts only Entra
// tokens, and the app reaches Key Vault and storage as the user-assigned identity. The identity
// exists before the app, so its role assignments are in place when the app first starts.

param location string
param tags object
param resourceToken string
param principalId string
param principalType string
param maximumInstanceCount int
param instanceMemoryMB int
param httpPerInstanceConcurrency int
param alwaysReadyHttpInstances int
param storageSku string
param serviceBaseUrl string
param entraClientId string
param entraAuthorityHost string
param entraTenant string
param graphBaseUrl string
param timumApiBaseUrl string
param timumReturnUrlAllowlist string
param timumStatusWebhookUrl string
param defaultLocale string
param syncWindowPastDays string
param syncWindowFutureDays string
param deltaPageSize string
param syncRoundSpacingMs string
param pollingIntervalMinutes string
param subscriptionLifetimeMinutes string
param graphMaxConcurrency string
param icsWindowPastDays string
param icsWindowFutureDays string
param icsImportIntervalMinutes string
param alertEmail string

var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'deployment-package'

// Built-in role definition ids (identical in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

// --- identity ---------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: tags
}

// --- storage ------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Flex Consumption runs the app from the zip package azd uploads here.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Tables and queues are created by the app on first use (shared/storage/azure.py).
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Blob Data Owner on the account, not only the container: the Functions host keeps its leases
// and timer-trigger locks in blobs of AzureWebJobsStorage.
resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- monitoring ---------------------------------------------------------------------------

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

// DisableLocalAuth: ingestion only with an Entra token, so the connection string below is an
// address, not a credential.
resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- Key Vault ----------------------------------------------------------------------------

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, identity.id, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Lets whoever runs azd write the secret values (RBAC-mode vaults grant nobody data access by default).
resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(keyVault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: principalId
    principalType: principalType
  }
}

// --- function app -------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: (alwaysReadyHttpInstances > 0) ? [
          {
            name: 'http'
            instanceCount: alwaysReadyHttpInstances
          }
        ] : []
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

var baseUrl = empty(serviceBaseUrl) ? 'https://${functionApp.properties.defaultHostName}' : serviceBaseUrl

// App settings live in their own resource so SERVICE_BASE_URL can use the app's host name, and
// so that they are written only after the identity may read the vault and use storage.
//
// The names are exactly shared/config.SETTINGS plus the platform's identity-based storage and
// Application Insights settings (tests/infra checks both directions). Flex Consumption takes the
// runtime from functionAppConfig: there is no FUNCTIONS_WORKER_RUNTIME here.
// Every secret is a Key Vault reference; secret names are the setting names in kebab-case.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    // DefaultAzureCredential in the app (shared/storage/azure.py) picks the identity by this.
    AZURE_CLIENT_ID: identity.properties.clientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identity.properties.clientId}'
    SERVICE_BASE_URL: baseUrl
    ENTRA_CLIENT_ID: entraClientId
    ENTRA_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVault.name};SecretName=entra-client-secret)'
    ENTRA_AUTHORITY_HOST: entraAuthorityHost
    ENTRA_TENANT: entraTenant
    GRAPH_BASE_URL: graphBaseUrl
    CA_BUNDLE: ''
    TOKEN_ENCRYPTION_KEYS: '@Microsoft.KeyVault(VaultName=${keyVault.name};SecretName=token-encryption-keys)'
    TIMUM_API_BASE_URL: timumApiBaseUrl
    TIMUM_API_KEY: '@Microsoft.KeyVault(VaultName=${keyVault.name};SecretName=timum-api-key)'
    TIMUM_WEBHOOK_SECRETS: '@Microsoft.KeyVault(VaultName=${keyVault.name};SecretName=timum-webhook-secrets)'
    TIMUM_CONNECT_SECRETS: '@Microsoft.KeyVault(VaultName=${keyVault.name};SecretName=timum-connect-secrets)'
    TIMUM_RETURN_URL_ALLOWLIST: timumReturnUrlAllowlist
    TIMUM_STATUS_WEBHOOK_URL: timumStatusWebhookUrl
    DEFAULT_LOCALE: defaultLocale
    SYNC_WINDOW_PAST_DAYS: syncWindowPastDays
    SYNC_WINDOW_FUTURE_DAYS: syncWindowFutureDays
    DELTA_PAGE_SIZE: deltaPageSize
    SYNC_ROUND_SPACING_MS: syncRoundSpacingMs
    POLLING_INTERVAL_MINUTES: pollingIntervalMinutes
    SUBSCRIPTION_LIFETIME_MINUTES: subscriptionLifetimeMinutes
    GRAPH_MAX_CONCURRENCY: graphMaxConcurrency
    ICS_WINDOW_PAST_DAYS: icsWindowPastDays
    ICS_WINDOW_FUTURE_DAYS: icsWindowFutureDays
    ICS_IMPORT_INTERVAL_MINUTES: icsImportIntervalMinutes
    ICS_IMPORT_ALLOW_LOOPBACK: 'false'
    FUNCTION_KEY: '@Microsoft.KeyVault(VaultName=${keyVault.name};SecretName=function-key)'
  }
  dependsOn: [
    blobDataOwner
    queueDataContributor
    tableDataContributor
    metricsPublisher
    secretsUser
  ]
}

module alerts 'alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appInsightsId: appInsights.id
    alertEmail: alertEmail
  }
}

output functionAppName string = functionApp.name
output keyVaultName string = keyVault.name
output storageAccountName string = storage.name
output applicationInsightsName string = appInsights.name
output serviceBaseUrl string = baseUrl
