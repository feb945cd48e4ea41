"""host.json, local.settings.json, app-setting references and storage connection resolution."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from devtools.devhost import ConfigError
from devtools.devhost.config import (
    HostOptions,
    apply_settings,
    load_host_json,
    parse_timespan,
    read_local_settings,
    resolve_setting_refs,
)
from devtools.devhost.queues import decode_content, encode_outputs, resolve_connection

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "expected"), [
    ("00:00:05", timedelta(seconds=5)),
    ("00:01:00", timedelta(minutes=1)),
    ("00:00:00.200", timedelta(milliseconds=200)),
    ("1.02:03:04.5", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=500)),
])
def test_timespans(text: str, expected: timedelta) -> None:
    assert parse_timespan(text) == expected


@pytest.mark.parametrize("text", ["5s", "00:60:00", "24:00:00", "", "1:2"])
def test_bad_timespans(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_timespan(text)


def test_defaults_follow_the_storage_extension() -> None:
    options = load_host_json({"version": "2.0"})
    assert options == HostOptions()
    assert options.queues.batch_size == 16
    assert options.queues.new_batch_threshold == 8
    assert options.queues.max_dequeue_count == 5
    assert options.queues.visibility_timeout == timedelta(0)
    assert options.queues.max_polling_interval == timedelta(minutes=1)
    assert options.queues.message_encoding == "base64"
    assert options.http.route_prefix == "api"


def test_the_projects_host_json_is_read() -> None:
    options = load_host_json(ROOT / "host.json")
    assert options.http.route_prefix == "api"
    assert options.queues.max_polling_interval <= timedelta(seconds=5)
    assert options.function_timeout is not None


def test_new_batch_threshold_defaults_to_half_the_batch() -> None:
    assert load_host_json({"extensions": {"queues": {"batchSize": 10}}}).queues.new_batch_threshold == 5


def test_polling_interval_has_a_floor_and_accepts_milliseconds() -> None:
    assert load_host_json({"extensions": {"queues": {"maxPollingInterval": 2000}}}).queues.max_polling_interval \
        == timedelta(seconds=2)
    assert load_host_json({"extensions": {"queues": {"maxPollingInterval": "00:00:00.010"}}}) \
        .queues.max_polling_interval == timedelta(milliseconds=100)


def test_function_timeout_minus_one_means_unbounded() -> None:
    assert load_host_json({"functionTimeout": "-1"}).function_timeout is None
    assert load_host_json({"functionTimeout": "00:10:00"}).function_timeout == timedelta(minutes=10)


@pytest.mark.parametrize("bad", [
    {"extensions": {"queues": {"batchSize": 33}}},
    {"extensions": {"queues": {"batchSize": "16"}}},
    {"extensions": {"queues": {"messageEncoding": "utf8"}}},
    {"extensions": {"queues": {"visibilityTimeout": "5s"}}},
    {"extensions": {"queues": {"maxDequeueCount": 0}}},
    {"extensions": {"http": {"routePrefix": 5}}},
    {"extensions": {"http": {"maxConcurrentRequests": 0}}},
    {"functionTimeout": "00:00:00"},
    {"extensions": []},
])
def test_bad_host_json_is_rejected_with_the_key(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="host.json"):
        load_host_json(bad)


def test_host_json_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_host_json(tmp_path / "missing.json")
    broken = tmp_path / "host.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_host_json(broken)


def test_local_settings_values_do_not_override_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "local.settings.json"
    file.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "from-file", "B": "from-file", "FLAG": True,
                                                                  "N": 3},
                                "Host": {"LocalHttpPort": 7072}}), encoding="utf-8")
    settings = read_local_settings(file)
    assert settings.local_http_port == 7072
    environ = {"A": "from-env"}
    applied = apply_settings(settings.values, environ)
    assert environ == {"A": "from-env", "B": "from-file", "FLAG": "true", "N": "3"}
    assert sorted(applied) == ["B", "FLAG", "N"]


def test_local_settings_missing_file_is_empty_and_encrypted_is_refused(tmp_path: Path) -> None:
    assert read_local_settings(tmp_path / "none.json").values == {}
    encrypted = tmp_path / "enc.json"
    encrypted.write_text(json.dumps({"IsEncrypted": True, "Values": {}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="encrypted"):
        read_local_settings(encrypted)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"Values": {"X": {"a": 1}}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="Values.X"):
        read_local_settings(nested)


def test_setting_references() -> None:
    env = {"QUEUE": "sync-jobs", "SCHEDULE": "0 */5 * * * *"}
    assert resolve_setting_refs("%QUEUE%", env, what="q") == "sync-jobs"
    assert resolve_setting_refs("%QUEUE%-x", env, what="q") == "sync-jobs-x"
    assert resolve_setting_refs("plain", env, what="q") == "plain"
    with pytest.raises(ConfigError, match="%MISSING%"):
        resolve_setting_refs("%MISSING%", env, what="q")


def test_connection_string_connection() -> None:
    conn = resolve_connection("AzureWebJobsStorage", {"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert conn.connection_string == "UseDevelopmentStorage=true"
    assert conn.setting == "AzureWebJobsStorage"
    assert "UseDevelopmentStorage" not in repr(conn)


def test_prefixed_setting_is_tried_first() -> None:
    env = {"AzureWebJobsJobs": "AccountName=a;AccountKey=k", "Jobs": "AccountName=b;AccountKey=k"}
    assert resolve_connection("Jobs", env).setting == "AzureWebJobsJobs"
    assert resolve_connection("Jobs", {"Jobs": "AccountName=b;AccountKey=k"}).setting == "Jobs"


def test_identity_based_connections() -> None:
    by_uri = resolve_connection("AzureWebJobsStorage", {
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net/"})
    assert by_uri.account_url == "https://acct.queue.core.windows.net"
    assert by_uri.credential == "default"
    by_account = resolve_connection("AzureWebJobsStorage", {
        "AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "cid"})
    assert by_account.account_url == "https://acct.queue.core.windows.net"
    assert (by_account.credential, by_account.client_id) == ("managedidentity", "cid")
    # .NET configuration keys ignore case.
    assert resolve_connection("AzureWebJobsStorage", {"azurewebjobsstorage__ACCOUNTNAME": "x"}).account_url \
        == "https://x.queue.core.windows.net"
    with_secret = resolve_connection("S", {"S__accountName": "a", "S__tenantId": "t", "S__clientId": "c",
                                           "S__clientSecret": "very-secret"})
    assert with_secret.credential == "clientsecret"
    assert "very-secret" not in repr(with_secret)
    with pytest.raises(ConfigError, match="__tenantId"):
        resolve_connection("S", {"S__accountName": "a", "S__clientSecret": "s"})


def test_missing_connection_names_what_to_set() -> None:
    with pytest.raises(ConfigError, match="AzureWebJobsStorage__accountName"):
        resolve_connection("AzureWebJobsStorage", {})


def test_message_encoding() -> None:
    assert decode_content("SGFsbG8=", "base64") == b"Hallo"
    assert decode_content("Hallo", "none") == b"Hallo"
    with pytest.raises(ValueError, match="base64"):
        decode_content("Hallo!", "base64")
    assert encode_outputs("Hallo", "base64") == ["SGFsbG8="]
    assert encode_outputs(["a", b"b"], "none") == ["a", "b"]
    with pytest.raises(TypeError, match="dict"):
        encode_outputs({"a": 1}, "base64")
