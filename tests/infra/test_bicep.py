"""The Bicep templates hold the security and hosting promises made in docs/deploy.md.

Parsed with pycep (there is no Bicep CLI here); each test names the property it guards.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared.config import SECRET_SETTING_NAMES, SETTINGS
from shared.observability.metrics import METRICS
from tests.infra.bicep import render, resource, resources, template, walk

ROOT = Path(__file__).resolve().parents[2]

# Settings the platform needs besides shared/config.SETTINGS (identity-based storage for the
# Functions host, the identity for DefaultAzureCredential, Application Insights with Entra auth).
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}

# Built-in Azure role definition ids, from Microsoft's built-in roles reference.
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
}

KV_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(VaultName=\$\{keyVault\.name\};SecretName=([a-z0-9-]+)\)$")


def app_settings() -> dict[str, Any]:
    (settings,) = [cfg for cfg in resources("app", "Microsoft.Web/sites/config").values()
                   if cfg["name"] == "appsettings"]
    props: dict[str, Any] = settings["properties"]
    return props


def secret_name(setting: str) -> str:
    return setting.lower().replace("_", "-")


def role_assignments() -> dict[str, dict[str, str]]:
    """Role assignments of app.bicep: role GUID → rendered scope, principal and principal type."""
    roles = template("app")["variables"]["roles"]["value"]
    found = {}
    for body in resources("app", "Microsoft.Authorization/roleAssignments").values():
        props = body["properties"]
        role_ref = render(props["roleDefinitionId"])
        match = re.fullmatch(r"subscription_resource_id\(Microsoft\.Authorization/roleDefinitions, roles\.(\w+)\)",
                             role_ref)
        assert match, f"role definition must be a subscriptionResourceId of the roles table: {role_ref}"
        found[roles[match.group(1)]] = {"scope": render(body["scope"]), "principal": render(props["principalId"]),
                                        "principal_type": render(props["principalType"])}
    return found


# --- storage ------------------------------------------------------------------------------------

def test_storage_refuses_shared_keys_plain_http_and_old_tls() -> None:
    props = resource("app", "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False


def test_deployment_container_is_private() -> None:
    container = resource("app", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["properties"]["publicAccess"] == "None"


@pytest.mark.parametrize("name", ["main", "app", "alerts"])
def test_no_template_reads_account_keys(name: str) -> None:
    text = (ROOT / "infra" / f"{name}.bicep").read_text(encoding="utf-8")
    assert "listKeys" not in text and "AccountKey" not in text and "InstrumentationKey" not in text
    functions = {node["function"]["type"] for node in walk(template(name)) if isinstance(node, dict)
                 and "function" in node}
    assert not {f for f in functions if "list" in f.lower()}, functions


# --- identity and roles -------------------------------------------------------------------------

def test_app_runs_as_a_user_assigned_identity() -> None:
    site = resource("app", "Microsoft.Web/sites")
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identity.id}'"]
    assert render(site["properties"]["keyVaultReferenceIdentity"]) == "identity.id"


@pytest.mark.parametrize(("role", "scopes"), [
    ("Storage Blob Data Owner", {"storage", "deploymentContainer"}),
    ("Storage Queue Data Contributor", {"storage"}),
    ("Storage Table Data Contributor", {"storage"}),
    ("Monitoring Metrics Publisher", {"appInsights"}),
    ("Key Vault Secrets User", {"keyVault"}),
])
def test_identity_holds_each_role_on_its_resource(role: str, scopes: set[str]) -> None:
    assignments = role_assignments()
    assert ROLE_IDS[role] in assignments, f"{role} is not assigned"
    assignment = assignments[ROLE_IDS[role]]
    assert assignment["principal"] == "identity.properties.principalId"
    assert assignment["principal_type"] == "ServicePrincipal"
    assert assignment["scope"] in scopes


def test_roles_table_uses_the_built_in_ids() -> None:
    roles = template("app")["variables"]["roles"]["value"]
    for role_id in ROLE_IDS.values():
        assert role_id in roles.values()


# --- Key Vault and secrets ----------------------------------------------------------------------

def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    props = resource("app", "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props


@pytest.mark.parametrize("name", sorted(SECRET_SETTING_NAMES - {"AzureWebJobsStorage"}))
def test_secret_setting_is_a_key_vault_reference(name: str) -> None:
    value = app_settings()[name]
    assert isinstance(value, str)
    match = KV_REFERENCE.match(value)
    assert match, f"{name} must be a Key Vault reference, got {value!r}"
    assert match.group(1) == secret_name(name)


def test_no_secret_travels_as_a_plain_setting_or_parameter() -> None:
    settings = app_settings()
    # Storage is identity-based: no connection string (it would carry the account key).
    assert "AzureWebJobsStorage" not in settings
    for name, value in settings.items():
        if isinstance(value, str) and KV_REFERENCE.match(value):
            assert name in SECRET_SETTING_NAMES, f"{name} is not a secret setting but reads Key Vault"
    # Secrets are never deployment parameters, so they never land in deployment history.
    for name in ("main", "app", "alerts"):
        for param, spec in template(name)["parameters"].items():
            secret_like = re.search(r"secret|password|(?<!resource)token|keys?$", param, re.IGNORECASE)
            assert not secret_like, f"{name}.bicep: {param}"
            assert not any(d["type"] == "secure" for d in spec["decorators"]), f"{name}.bicep: {param}"


# --- hosting ------------------------------------------------------------------------------------

def test_plan_is_flex_consumption() -> None:
    plan = resource("app", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True


def test_function_app_config_declares_runtime_scale_and_identity_deployment() -> None:
    site = resource("app", "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    scale = config["scaleAndConcurrency"]
    assert render(scale["maximumInstanceCount"]) == "maximumInstanceCount"
    assert render(scale["instanceMemoryMB"]) == "instanceMemoryMB"
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert render(storage["authentication"]["userAssignedIdentityResourceId"]) == "identity.id"
    params = template("main")["parameters"]
    memory = next(d for d in params["instanceMemoryMB"]["decorators"] if d["type"] == "allowed")
    assert memory["argument"] == [512, 2048, 4096]
    bounds = {d["type"]: d["argument"] for d in params["maximumInstanceCount"]["decorators"]}
    assert bounds["min_value"] >= 1 and bounds["max_value"] == 1000


def test_flex_has_no_worker_runtime_setting_anywhere() -> None:
    for name in ("main", "app"):
        for node in walk(template(name)):
            keys = list(node) if isinstance(node, dict) else []
            texts = [node] if isinstance(node, str) else keys
            assert not any("FUNCTIONS_WORKER_RUNTIME" in t for t in texts), f"{name}.bicep sets it"
    assert "FUNCTIONS_WORKER_RUNTIME" not in app_settings()


def test_site_is_https_only_with_tls12_and_no_ftp() -> None:
    site = resource("app", "Microsoft.Web/sites")
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    ftp = resource("app", "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert ftp["name"] == "ftp" and ftp["properties"]["allow"] is False


def test_azd_finds_the_app_by_its_service_tag() -> None:
    tags = render(resource("app", "Microsoft.Web/sites")["tags"])
    assert "'azd-service-name': api" in tags


# --- monitoring ---------------------------------------------------------------------------------

def test_application_insights_accepts_only_entra_ingestion() -> None:
    props = resource("app", "Microsoft.Insights/components")["properties"]
    assert props["DisableLocalAuth"] is True
    assert render(props["WorkspaceResourceId"]) == "logAnalytics.id"
    settings = app_settings()
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "Authorization=AAD;ClientId=${identity.properties.clientId}")
    assert render(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == "appInsights.properties.ConnectionString"


def test_host_storage_is_identity_based() -> None:
    settings = app_settings()
    assert render(settings["AzureWebJobsStorage__accountName"]) == "storage.name"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert render(settings["AzureWebJobsStorage__clientId"]) == "identity.properties.clientId"
    assert render(settings["AZURE_CLIENT_ID"]) == "identity.properties.clientId"


# --- app settings and shared/config.SETTINGS agree ----------------------------------------------

def test_app_settings_are_exactly_config_settings_plus_platform_ones() -> None:
    in_bicep = set(app_settings())
    in_config = {spec.name for spec in SETTINGS}
    missing = in_config - in_bicep
    extra = in_bicep - in_config - PLATFORM_SETTINGS
    assert not missing, f"settings in shared/config.SETTINGS but not in infra/app.bicep: {sorted(missing)}"
    assert not extra, f"app settings in infra/app.bicep unknown to shared/config.SETTINGS: {sorted(extra)}"
    assert in_bicep >= PLATFORM_SETTINGS


def _main_value_for(app_param: str) -> str:
    """What main.bicep passes into app.bicep's parameter ``app_param``."""
    module = template("main")["modules"]["app"]["config"]["params"]
    return render(module[app_param])


@pytest.mark.parametrize("spec", [s for s in SETTINGS if not s.secret], ids=lambda s: s.name)
def test_plain_setting_default_matches_config(spec: Any) -> None:
    """A default changed in shared/config.py and not in infra (or back) fails here."""
    value = app_settings()[spec.name]
    app_params = template("app")["parameters"]
    main_params = template("main")["parameters"]
    if spec.name == "SERVICE_BASE_URL":
        assert render(value) == "baseUrl"
        return
    if isinstance(value, str) and value not in app_params:
        assert value == (spec.default or ""), f"{spec.name}: literal {value!r} differs from config default"
        return
    main_param = _main_value_for(render(value))
    assert main_param in main_params, f"{spec.name} is not an operator parameter in main.bicep"
    default = main_params[main_param]["default"]
    if spec.required:
        assert default is None, f"{spec.name} is required: main.bicep must not invent a default"
    else:
        assert default == spec.default, f"{spec.name}: main.bicep default {default!r} != config {spec.default!r}"


# --- wiring between the templates ---------------------------------------------------------------

@pytest.mark.parametrize(("caller", "module", "target"), [("main", "app", "app"), ("app", "alerts", "alerts")])
def test_modules_receive_exactly_their_parameters(caller: str, module: str, target: str) -> None:
    passed = set(template(caller)["modules"][module]["config"]["params"])
    declared = template(target)["parameters"]
    required = {name for name, spec in declared.items() if spec["default"] is None}
    assert passed <= set(declared), f"unknown parameters passed to {target}.bicep: {passed - set(declared)}"
    assert required <= passed, f"{target}.bicep parameters left unset: {required - passed}"


def test_outputs_give_every_url_the_operator_hands_out() -> None:
    outputs = {name: render(out["value"]) for name, out in template("main")["outputs"].items()}
    expected = {
        "OAUTH_REDIRECT_URI": "/api/oauth/callback",
        "ADMIN_CONSENT_REDIRECT_URI": "/api/oauth/admin-callback",
        "GRAPH_NOTIFICATION_URL": "/api/graph/notifications",
        "GRAPH_LIFECYCLE_URL": "/api/graph/lifecycle",
        "TIMUM_BOOKING_WEBHOOK_URL": "/api/timum/bookings",
    }
    for name, path in expected.items():
        assert outputs[name] == "${app.outputs.serviceBaseUrl}" + path
    assert outputs["FUNCTION_APP_NAME"] == "app.outputs.functionAppName"
    assert outputs["KEY_VAULT_NAME"] == "app.outputs.keyVaultName"
    assert outputs["SERVICE_BASE_URL"] == "app.outputs.serviceBaseUrl"
    app_outputs = template("app")["outputs"]
    assert render(app_outputs["serviceBaseUrl"]["value"]) == "baseUrl"
    assert render(app_outputs["keyVaultName"]["value"]) == "keyVault.name"
    assert render(app_outputs["functionAppName"]["value"]) == "functionApp.name"


# --- alerts -------------------------------------------------------------------------------------

def alert_defs() -> list[dict[str, Any]]:
    defs: list[dict[str, Any]] = template("alerts")["variables"]["alertDefs"]["value"]
    return defs


def test_alerts_query_only_metrics_the_app_emits() -> None:
    for alert in alert_defs():
        for metric in re.findall(r'name == "(\w+)"', alert["query"]):
            assert metric in METRICS, f"alert {alert['name']} queries unknown metric {metric}"
        assert alert["column"] in alert["query"], alert["name"]


def test_every_alert_is_explained_in_the_runbook() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    for alert in alert_defs():
        assert f"`{alert['name']}`" in runbook, f"docs/runbook.md does not explain alert {alert['name']}"


def test_deploy_guide_names_every_key_vault_secret() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name in SECRET_SETTING_NAMES - {"AzureWebJobsStorage"}:
        assert secret_name(name) in guide, f"docs/deploy.md does not say how to set {secret_name(name)}"


def test_scaling_guide_states_the_template_defaults() -> None:
    guide = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    params = template("main")["parameters"]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\d,]+) \|", guide, re.MULTILINE))
    knobs = ("maximumInstanceCount", "instanceMemoryMB", "httpPerInstanceConcurrency", "alwaysReadyHttpInstances")
    for knob in knobs:
        assert knob in rows, f"docs/scaling.md does not list {knob}"
        assert int(rows[knob].replace(",", "")) == params[knob]["default"], knob


def test_deploy_guide_lists_every_delegated_permission_the_app_requests() -> None:
    from shared.connect.msal_client import DELEGATED_SCOPES

    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    delegated = guide.split("**Delegated**", 1)[1].split("**Application**", 1)[0]
    for scope in ("offline_access", *DELEGATED_SCOPES):
        assert f"`{scope}`" in delegated, f"docs/deploy.md does not tell operators to add {scope}"
