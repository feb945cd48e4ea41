// Log alerts on the metrics of shared/observability/metrics.py (customMetrics in Application Insights)
// and on 503 answers. docs/runbook.md explains each alert and what to do about it.
//
// Metric names here must exist in shared.observability.metrics.METRICS; tests/infra checks that.

param location string
param tags object
param resourceToken string
param appInsightsId string
param alertEmail string

@description('Links needing a new sign-in at once before the alert fires; a few are normal, many point at a tenant-wide cause.')
param reconnectThreshold int = 10

@description('Graph 429 answers per 15 minutes before the alert fires.')
param throttleThreshold int = 100

@description('Average notification/booking lag in ms over 30 minutes before the alert fires.')
param lagThresholdMs int = 300000

@description('Messages waiting in one queue before the backlog alert fires.')
param queueDepthThreshold int = 5000

var alertDefs = [
  {
    name: 'poison-messages'
    severity: 2
    description: 'Messages moved to a -poison queue after 5 failed attempts.'
    query: 'customMetrics | where name == "poison_messages" | summarize total = sum(valueSum)'
    aggregation: 'Total'
    column: 'total'
    threshold: 0
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'links-needing-reconnect'
    severity: 3
    description: 'Many links need a new Microsoft sign-in at the same time.'
    query: 'customMetrics | where name == "links_needing_reconnect" | summarize links = max(valueMax)'
    aggregation: 'Maximum'
    column: 'links'
    threshold: reconnectThreshold
    frequency: 'PT15M'
    window: 'PT1H'
  }
  {
    name: 'graph-throttling'
    severity: 2
    description: 'Microsoft Graph answers 429 far more often than usual.'
    query: 'customMetrics | where name == "graph_throttled" | summarize total = sum(valueSum)'
    aggregation: 'Total'
    column: 'total'
    threshold: throttleThreshold
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'subscription-renewal-failures'
    severity: 2
    description: 'Graph subscriptions could not be created or renewed; links fall back to polling.'
    query: 'customMetrics | where name == "subscription_renewal_failures" | summarize total = sum(valueSum)'
    aggregation: 'Total'
    column: 'total'
    threshold: 3
    frequency: 'PT15M'
    window: 'PT1H'
  }
  {
    name: 'notification-lag'
    severity: 2
    description: 'Outlook changes take too long to become blocked slots in timum.'
    query: 'customMetrics | where name == "notification_to_block_lag_ms" | summarize lag = sum(valueSum) / sum(valueCount)'
    aggregation: 'Average'
    column: 'lag'
    threshold: lagThresholdMs
    frequency: 'PT10M'
    window: 'PT30M'
  }
  {
    name: 'booking-lag'
    severity: 2
    description: 'timum bookings take too long to appear in Outlook.'
    query: 'customMetrics | where name == "booking_to_event_lag_ms" | summarize lag = sum(valueSum) / sum(valueCount)'
    aggregation: 'Average'
    column: 'lag'
    threshold: lagThresholdMs
    frequency: 'PT10M'
    window: 'PT30M'
  }
  {
    name: 'queue-backlog'
    severity: 2
    description: 'A queue grows faster than the workers drain it.'
    query: 'customMetrics | where name == "queue_depth" | summarize depth = max(valueMax)'
    aggregation: 'Maximum'
    column: 'depth'
    threshold: queueDepthThreshold
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'service-unavailable'
    severity: 1
    description: 'Requests answered 503: storage unreachable (health) or notifications not persisted.'
    query: 'requests | where resultCode == "503" | summarize failed = count()'
    aggregation: 'Total'
    column: 'failed'
    threshold: 5
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'consent-errors'
    severity: 3
    description: 'Sign-ins refused because a tenant has not granted admin consent.'
    query: 'customMetrics | where name == "consent_errors" | summarize total = sum(valueSum)'
    aggregation: 'Total'
    column: 'total'
    threshold: 0
    frequency: 'PT15M'
    window: 'PT1H'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${resourceToken}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'timumsync'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in alertDefs: {
  name: 'alert-${alert.name}-${resourceToken}'
  location: location
  tags: tags
  properties: {
    displayName: 'timum sync: ${alert.name}'
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: alert.frequency
    windowSize: alert.window
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: alert.aggregation
          metricMeasureColumn: alert.column
          operator: 'GreaterThan'
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}]
