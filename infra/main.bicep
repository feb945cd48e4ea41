// Entry point for `azd provision`: one resource group holding the whole service (see app.bicep).
//
// Secrets are not parameters here. The operator writes them into the Key Vault this template
// creates (docs/deploy.md); the app reads them through Key Vault references.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Azure region for every resource (must offer Flex Consumption).')
param location string

@description('Object id of the person or pipeline running azd; gets Key Vault Secrets Officer to write the secrets. Empty: no such assignment.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

// --- scale (docs/scaling.md) ------------------------------------------------------------

@minValue(1)
@maxValue(1000)
@description('Upper bound of on-demand instances per scale group (the HTTP group; each queue function).')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Memory per instance in MB; CPU follows (0.25 / 1 / 2 cores).')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP requests per instance. Python defaults to 1; our handlers are async and light.')
param httpPerInstanceConcurrency int = 16

@minValue(0)
@maxValue(10)
@description('Instances kept warm for the HTTP group, so Graph notifications never wait for a cold start.')
param alwaysReadyHttpInstances int = 1

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param storageSku string = 'Standard_LRS'

// --- non-secret app settings (names as in shared/config.py) --------------------------------

@description('Public base URL, e.g. https://sync.timum.de. Empty: the function app\'s default host name.')
param serviceBaseUrl string = ''

@description('Application (client) id of the Entra app registration.')
param entraClientId string

param entraAuthorityHost string = 'https://login.microsoftonline.com'
param entraTenant string = 'organizations'
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Base URL of the timum API.')
param timumApiBaseUrl string

@description('Comma-separated URL prefixes a connect link may return to.')
param timumReturnUrlAllowlist string

@description('Where link-status webhooks are POSTed (empty: none sent).')
param timumStatusWebhookUrl string = ''

@allowed([
  'de'
  'en'
])
param defaultLocale string = 'de'
param syncWindowPastDays string = '1'
param syncWindowFutureDays string = '365'
param deltaPageSize string = '100'
@description('Least time between two delta rounds of one link while changes keep coming (ms)')
param syncRoundSpacingMs string = '2000'
param pollingIntervalMinutes string = '5'
param subscriptionLifetimeMinutes string = '4200'
param graphMaxConcurrency string = '4'
param icsWindowPastDays string = '30'
param icsWindowFutureDays string = '365'
param icsImportIntervalMinutes string = '15'

// --- alerts (docs/runbook.md) --------------------------------------------------------------

@description('E-mail address that receives alerts. Empty: alerts fire in the portal only.')
param alertEmail string = ''

var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module app 'app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: toLower(uniqueString(subscription().id, environmentName, location))
    principalId: principalId
    principalType: principalType
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    storageSku: storageSku
    serviceBaseUrl: serviceBaseUrl
    entraClientId: entraClientId
    entraAuthorityHost: entraAuthorityHost
    entraTenant: entraTenant
    graphBaseUrl: graphBaseUrl
    timumApiBaseUrl: timumApiBaseUrl
    timumReturnUrlAllowlist: timumReturnUrlAllowlist
    timumStatusWebhookUrl: timumStatusWebhookUrl
    defaultLocale: defaultLocale
    syncWindowPastDays: syncWindowPastDays
    syncWindowFutureDays: syncWindowFutureDays
    deltaPageSize: deltaPageSize
    syncRoundSpacingMs: syncRoundSpacingMs
    pollingIntervalMinutes: pollingIntervalMinutes
    subscriptionLifetimeMinutes: subscriptionLifetimeMinutes
    graphMaxConcurrency: graphMaxConcurrency
    icsWindowPastDays: icsWindowPastDays
    icsWindowFutureDays: icsWindowFutureDays
    icsImportIntervalMinutes: icsImportIntervalMinutes
    alertEmail: alertEmail
  }
}

// azd writes these into .azure/<env>/.env; docs/deploy.md says which to hand to whom.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = app.outputs.functionAppName
output KEY_VAULT_NAME string = app.outputs.keyVaultName
output STORAGE_ACCOUNT_NAME string = app.outputs.storageAccountName
output APPLICATIONINSIGHTS_NAME string = app.outputs.applicationInsightsName
output SERVICE_BASE_URL string = app.outputs.serviceBaseUrl
output OAUTH_REDIRECT_URI string = '${app.outputs.serviceBaseUrl}/api/oauth/callback'
output ADMIN_CONSENT_REDIRECT_URI string = '${app.outputs.serviceBaseUrl}/api/oauth/admin-callback'
output GRAPH_NOTIFICATION_URL string = '${app.outputs.serviceBaseUrl}/api/graph/notifications'
output GRAPH_LIFECYCLE_URL string = '${app.outputs.serviceBaseUrl}/api/graph/lifecycle'
output TIMUM_BOOKING_WEBHOOK_URL string = '${app.outputs.serviceBaseUrl}/api/timum/bookings'
output HEALTH_URL string = '${app.outputs.serviceBaseUrl}/api/health'
