"""Route templates (ASP.NET Core syntax) as the Functions host reads them."""

from __future__ import annotations

import pytest

from devtools.devhost import ConfigError
from devtools.devhost.routing import MethodNotAllowed, RouteMatch, Router, compile_route


def params(template: str, path: str, prefix: str = "api") -> dict[str, str] | None:
    return compile_route(template, prefix).match(path)


def test_literal_and_parameters() -> None:
    assert params("connect/{provider}/{resource}", "/api/connect/p1/r2") == {"provider": "p1", "resource": "r2"}
    assert params("connect/{provider}", "/api/Connect/p1") == {"provider": "p1"}
    assert params("connect/{provider}", "/api/connect") is None
    assert params("connect/{provider}", "/api/connect/a/b") is None


def test_values_are_percent_decoded_but_an_encoded_slash_stays_in_its_segment() -> None:
    assert params("ics/{token}", "/api/ics/a%20b%C3%A4") == {"token": "a bä"}
    assert params("ics/{token}", "/api/ics/a%2Fb") == {"token": "a/b"}


def test_optional_and_default_values() -> None:
    assert params("feed/{id}/{format?}", "/api/feed/1") == {"id": "1"}
    assert params("feed/{id}/{format?}", "/api/feed/1/ics") == {"id": "1", "format": "ics"}
    assert params("feed/{id}/{format=ics}", "/api/feed/1") == {"id": "1", "format": "ics"}


def test_catch_all() -> None:
    assert params("static/{*path}", "/api/static/css/site.css") == {"path": "css/site.css"}
    assert params("static/{**path}", "/api/static") == {}


def test_several_parameters_in_one_segment_split_at_the_last_literal() -> None:
    assert params("files/{name}.{ext}", "/api/files/report.2025.ics") == {"name": "report.2025", "ext": "ics"}


@pytest.mark.parametrize(("template", "good", "bad"), [
    ("n/{v:int}", "-12", "1.5"),
    ("n/{v:int}", "2147483647", "2147483648"),
    ("n/{v:long}", "2147483648", "x"),
    ("n/{v:bool}", "TRUE", "yes"),
    ("n/{v:guid}", "0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b"),
    ("n/{v:alpha}", "abcXYZ", "abc1"),
    ("n/{v:double}", "1.5e3", "nan"),
    ("n/{v:datetime}", "2025-03-14T09:30:00", "tomorrow"),
    ("n/{v:min(10)}", "10", "9"),
    ("n/{v:max(10)}", "10", "11"),
    ("n/{v:range(1,3)}", "3", "4"),
    ("n/{v:minlength(3)}", "abc", "ab"),
    ("n/{v:maxlength(3)}", "abc", "abcd"),
    ("n/{v:length(2)}", "ab", "abc"),
    ("n/{v:length(2,3)}", "abc", "a"),
    ("n/{v:regex(^[a-z]+-\\d+$)}", "abc-12", "abc-x"),
    ("n/{v:int:min(1)}", "1", "0"),
])
def test_constraints(template: str, good: str, bad: str) -> None:
    assert params(template, f"/api/n/{good}") == {"v": good}
    assert params(template, f"/api/n/{bad}") is None


@pytest.mark.parametrize("template", [
    "a/{x}/{x}",  # the same name twice
    "a/{*rest}/b",  # catch-all not last
    "a/{x?}/b",  # optional before a required segment
    "a/{x}{y}",  # two parameters with nothing between
    "a/{x:nosuch}",
    "a/{x:min(a)}",
    "a/{x:regex(()}",
    "a/{1x}",
    "a//b",
    "a/{x",
    "a/pre{x?}",
])
def test_bad_templates_are_rejected(template: str) -> None:
    with pytest.raises(ConfigError):
        compile_route(template, "api")


def test_most_specific_route_wins_whatever_the_declaration_order() -> None:
    router: Router[str] = Router(prefix="api")
    router.add("items/{*rest}", None, "catch-all")
    router.add("items/{id}", None, "param")
    router.add("items/{id:int}", None, "int")
    router.add("items/new", None, "literal")
    assert router.resolve("GET", "/api/items/new") == RouteMatch("literal", {})
    assert router.resolve("GET", "/api/items/5") == RouteMatch("int", {"id": "5"})
    assert router.resolve("GET", "/api/items/x") == RouteMatch("param", {"id": "x"})
    assert router.resolve("GET", "/api/items/x/y") == RouteMatch("catch-all", {"rest": "x/y"})


def test_method_filtering_reports_every_allowed_method() -> None:
    router: Router[str] = Router(prefix="api")
    router.add("things/{id}", ["GET"], "read")
    router.add("things/{id}", ["delete", "PATCH"], "change")
    assert router.resolve("PATCH", "/api/things/1") == RouteMatch("change", {"id": "1"})
    assert router.resolve("PUT", "/api/things/1") == MethodNotAllowed(frozenset({"GET", "DELETE", "PATCH"}))
    assert router.resolve("GET", "/api/other") is None


def test_empty_prefix_and_empty_route() -> None:
    assert params("", "/api") == {}
    assert params("health", "/health", prefix="") == {}
    assert params("health", "/api/health", prefix="") is None
