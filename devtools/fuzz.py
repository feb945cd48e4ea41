"""Fuzzing every HTTP endpoint the app declares, driven by ``docs/openapi-service.yaml``.

For each operation of the description, Hypothesis generates requests that are wrong in every way
a caller can be wrong: other methods, bodies that are huge, not JSON, JSON of the wrong shape or
with values of the wrong type, hostile strings (control characters, bidi overrides, emoji,
thousands of characters) in paths, query strings, headers, form fields and JSON, forged
signatures (``Timum-Signature``, connect links, OAuth state, session cookies), and unknown
subscription ids or wrong clientStates. Nothing generated is authenticated: the right function
key is sometimes sent, but never a valid signature, connect link, state or session.

Checked for every request: the host answers, with a status below 500, and one the description
documents for the operation (or the host's own 401/404/405/413). Checked around each operation's
batch: every Azurite table row (with its ETag) and every queue are exactly as before — an
unauthenticated request changes nothing.

``python -m bench.fuzz [--examples N]`` runs the long version and reports it; ``tests/fuzz`` a short one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.stack import ROOT

if TYPE_CHECKING:
    from devtools.stack import Stack

SPEC_PATH = ROOT / "docs" / "openapi-service.yaml"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
#: answers the host itself gives before any function runs
HOST_STATUSES = frozenset({401, 404, 405, 413})
HOST_BODY_LIMIT = 1024 * 1024
#: longest percent-encoded query string or path generated. httpx refuses to send a URL component
#: over 65,536 characters (``InvalidURL``); this stays well below it, whatever its own encoding.
MAX_URL_PART = 32_000


# --- the description ----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return data


def resolve(node: Any, spec: dict[str, Any] | None = None) -> Any:
    """Follow a local ``$ref`` (one level at a time is enough: the description nests them)."""
    spec = spec or load_spec()
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


@dataclass(frozen=True)
class Operation:
    path: str                      # as in the description, under /api, e.g. "/ics/{token}"
    method: str
    operation_id: str
    parameters: tuple[dict[str, Any], ...]
    bodies: tuple[tuple[str, dict[str, Any]], ...]   # (media type, schema)
    statuses: frozenset[int]
    function_key: bool

    @property
    def route(self) -> str:
        return self.path.lstrip("/")

    def param(self, location: str) -> list[dict[str, Any]]:
        return [p for p in self.parameters if p["in"] == location]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def operations(spec: dict[str, Any] | None = None) -> list[Operation]:
    spec = spec or load_spec()
    out: list[Operation] = []
    for path, item in spec["paths"].items():
        shared = [resolve(p, spec) for p in item.get("parameters", [])]
        for method in ("get", "post", "put", "delete", "head", "patch"):
            op = item.get(method)
            if op is None:
                continue
            params = {(p["in"], p["name"]): p for p in shared}
            params.update({(p["in"], p["name"]): p for p in (resolve(x, spec) for x in op.get("parameters", []))})
            body = op.get("requestBody", {}).get("content", {})
            bodies = tuple((media, resolve(content.get("schema", {}), spec)) for media, content in body.items())
            statuses = frozenset(int(code) for code in op.get("responses", {}))
            out.append(Operation(path, method.upper(), op["operationId"], tuple(params.values()), bodies, statuses,
                                 function_key=bool(op.get("security"))))
    return out


def app_routes() -> set[tuple[str, str]]:
    """(route, METHOD) of every HTTP function of ``function_app``, from the app's own metadata."""
    from devtools.devhost.metadata import HttpTriggerSpec, describe_app, load_app

    found: set[tuple[str, str]] = set()
    for spec in describe_app(load_app("function_app")):
        trigger = spec.trigger
        if isinstance(trigger, HttpTriggerSpec):
            for method in trigger.methods or METHODS:
                found.add((trigger.route.strip("/"), method.upper()))
    return found


def described_routes() -> set[tuple[str, str]]:
    return {(op.route, op.method) for op in operations()}


# --- hostile values -----------------------------------------------------------------------------

_NASTY = ["", " ", "\x00", "\t\n\r", "\u202e" + "gnp.exe", "\ufeff", "😀" * 3, "ß\u0308", "../../etc/passwd",
          "%00", "%2F%2e%2e", "<script>alert(1)</script>", "' OR '1'='1", "${jndi:ldap://x}", "{{7*7}}",
          "null", "true", "-1", "1e309", "NaN", "\\", "\"", "|", "a|b|c", "~", "~AAAA", "\x7f", "\u0000\u0001",
          "\ud7ff", "\U0010ffff", "Ωmega", "Ä" * 200]


def hostile_text(max_size: int = 60, *, longest: int = 3000) -> st.SearchStrategy[str]:
    """Strings that break naive code. ``longest`` bounds the very long ones: URLs stay below the
    clients' limits, bodies may carry far more."""
    long = st.builds(lambda s, n: (s or "x") * n, st.sampled_from(["A", "ä", "😀", "%", "\x01", "ab/"]),
                     st.sampled_from(sorted({300, longest})))
    return st.one_of(st.sampled_from(_NASTY), st.text(max_size=max_size), long,
                     st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "So", "Lo"]),
                             max_size=max_size))


def header_text() -> st.SearchStrategy[str]:
    """Header values the HTTP client can send: printable ASCII, no line breaks, no surrounding blanks."""
    return st.one_of(st.sampled_from(["", "x" * 5000, "a\tb", "a,b;c=d", "=?utf-8?b?w4Q=?=", "%00%0d%0a"]),
                     st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
                     .map(lambda s: s.strip(" \t")))


def any_json(depth: int = 3) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                       st.floats(allow_nan=False, allow_infinity=False), hostile_text(30))
    if depth <= 0:
        return leaves
    return st.one_of(leaves, st.lists(any_json(depth - 1), max_size=4),
                     st.dictionaries(hostile_text(12), any_json(depth - 1), max_size=4))


def _date_time() -> st.SearchStrategy[str]:
    good = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    return st.one_of(good, st.sampled_from(["2026-13-45T25:61:00Z", "2026-01-01T10:00:00", "0000-00-00", "yesterday",
                                            "2026-01-01T10:00:00+25:00", "9999-12-31T23:59:59Z",
                                            "0001-01-01T00:00:00-23:59"]))


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values shaped by a JSON schema — right types, hostile contents — with a share of wrong types."""
    schema = resolve(schema)
    wrong = any_json(1)
    if depth > 4:
        return wrong
    if "const" in schema:
        right: st.SearchStrategy[Any] = st.just(schema["const"])
    elif "enum" in schema:
        right = st.one_of(st.sampled_from(schema["enum"]), hostile_text(10))
    else:
        kind = schema.get("type", "object")
        kind = kind[0] if isinstance(kind, list) else kind
        if kind == "object":
            props = schema.get("properties", {})
            fields = {k: from_schema(v, depth + 1) for k, v in props.items()}
            right = st.one_of(st.fixed_dictionaries({}, optional=fields), st.fixed_dictionaries(fields))
        elif kind == "array":
            right = st.lists(from_schema(schema.get("items", {}), depth + 1), max_size=5)
        elif kind == "string":
            right = _date_time() if schema.get("format") == "date-time" else hostile_text(longest=70_000)
        elif kind == "integer":
            right = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 2**31, 2**63]))
        elif kind == "boolean":
            right = st.booleans()
        else:
            right = wrong
    return st.one_of(right, right, right, wrong)


# --- forged credentials -------------------------------------------------------------------------

def forged_signature() -> st.SearchStrategy[str]:
    now = int(time.time())
    mac = st.binary(min_size=32, max_size=32).map(bytes.hex)
    return st.one_of(
        mac.map(lambda h: f"t={now},v1={h}"),
        mac.map(lambda h: f"t={now - 3600},v1={h}"),
        st.builds(lambda hs: f"t={now}," + ",".join(f"v1={h}" for h in hs), st.lists(mac, min_size=2, max_size=50)),
        st.sampled_from(["", "t=,v1=", "t=abc,v1=zz", "v1=00", "t=1", f"t={now},v1=" + "0" * 64,
                         f"t={10**30},v1=00", "t=-1,v1=" + "f" * 64]),
        header_text())


def forged_connect_token() -> st.SearchStrategy[str]:
    def build(payload: dict[str, Any], key: bytes) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=").decode()
        sig = base64.urlsafe_b64encode(hmac.new(key, raw.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
        return f"{raw}.{sig}"

    payload = st.fixed_dictionaries({
        "v": st.sampled_from([1, 2, "1"]), "pid": hostile_text(20), "rid": st.one_of(st.none(), hostile_text(20)),
        "loc": st.sampled_from(["de", "en", "xx", ""]), "ret": st.sampled_from(
            ["http://127.0.0.1:7080/timum/providers/p", "https://evil.example/", "javascript:alert(1)", ""]),
        "exp": st.integers(min_value=0, max_value=2**40),
        "nonce": st.one_of(st.just(secrets.token_urlsafe(24)), hostile_text(20))})
    return st.one_of(st.builds(build, payload, st.binary(min_size=1, max_size=32)), hostile_text(),
                     st.sampled_from([".", "a.b", "....", "=" * 50 + "." + "=" * 50]))


def notification_body(lifecycle: bool, known: list[tuple[str, str]]) -> st.SearchStrategy[bytes]:
    """Graph-shaped bodies: known subscription ids with the wrong clientState, unknown ids, junk."""
    sub = st.one_of(st.sampled_from([k for k, _ in known] or ["none"]), st.uuids().map(str), hostile_text(40))
    state = st.one_of(st.sampled_from([s + "x" for _, s in known] or ["x"]), hostile_text(40), st.none())
    item = st.fixed_dictionaries({"subscriptionId": sub, "clientState": state}, optional={
        "changeType": st.sampled_from(["created", "updated", "deleted", "bogus"]),
        "lifecycleEvent": st.sampled_from(["reauthorizationRequired", "subscriptionRemoved", "missed", "other"]),
        "resource": hostile_text(), "tenantId": hostile_text(20), "resourceData": any_json(2)})
    shaped = st.builds(lambda items: json.dumps({"value": items}).encode(),
                       st.lists(st.one_of(item, any_json(1)), max_size=8 if not lifecycle else 4))
    many = st.builds(lambda n: json.dumps({"value": [{"subscriptionId": "x", "clientState": "y"}] * n}).encode(),
                     st.sampled_from([1000, 1001, 5000]))
    return st.one_of(shaped, shaped, many, st.builds(lambda v: json.dumps(v).encode(), any_json()))


# --- requests ----------------------------------------------------------------------------------

@dataclass
class FuzzRequest:
    method: str
    path: str                      # with path parameters filled in and escaped
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        shown = self.body[:200]
        return (f"{self.method} {self.path[:200]} query={self.query!r:.300} headers={self.headers!r:.300} "
                f"body[{len(self.body)}]={shown!r}")


@dataclass
class World:
    """What the fuzzer may aim near: real ids whose secrets it does not know."""

    subscriptions: list[tuple[str, str]]       # (subscription id, clientState) — the state is only mangled
    providers: list[str]
    resources: list[str]
    ics_token: str
    function_key: str


def _body(op: Operation, world: World) -> st.SearchStrategy[tuple[str, bytes]]:
    junk = st.one_of(
        st.binary(max_size=200),
        st.builds(lambda n: b"{" * n, st.sampled_from([1, 100, 10_000])),
        st.builds(lambda n: b"A" * n, st.sampled_from([70 * 1024, 300 * 1024, HOST_BODY_LIMIT + 1])),
        st.sampled_from([b"", b"null", b"[]", b"{}", b'{"value":', b"\xff\xfe\x00", b'{"a":NaN}', b"1" * 400]))
    choices: list[st.SearchStrategy[tuple[str, bytes]]] = [
        st.tuples(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "", "application/json; charset=latin-1"]),
                  junk)]
    if op.path in ("/graph/notifications", "/graph/lifecycle"):
        choices.append(st.tuples(st.just("application/json"),
                                 notification_body(op.path.endswith("lifecycle"), world.subscriptions)))
    for media, schema in op.bodies:
        if media == "application/json":
            choices.append(st.tuples(st.just(media), from_schema(schema).map(
                lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))))
        elif media == "application/x-www-form-urlencoded":
            fields = list(resolve(schema).get("properties", {})) + ["extra"]
            choices.append(st.tuples(st.just(media), st.lists(
                st.tuples(st.sampled_from(fields), hostile_text(80)), max_size=8).map(
                lambda pairs: "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs).encode())))
    return st.one_of(*choices)


def _path_value(name: str, world: World) -> st.SearchStrategy[str]:
    near: list[str] = []
    if name == "token":
        near = [world.ics_token + "x", world.ics_token[:-1], world.ics_token.upper(), world.ics_token + ".ics.ics",
                secrets.token_urlsafe(32), secrets.token_urlsafe(32) + ".ics"]
    elif name == "provider":
        near = world.providers
    elif name == "resource":
        near = world.resources
    return st.one_of(st.sampled_from(near or ["x"]), hostile_text(40))


def _encoded(pairs: list[tuple[str, str]]) -> int:
    return len(urlencode(pairs, quote_via=quote))


def fit_query(query: list[tuple[str, str]], limit: int = MAX_URL_PART) -> list[tuple[str, str]]:
    """``query`` with its longest keys or values halved until the encoded string fits ``limit``:
    still long and hostile, but something the client sends, so the service is what gets tested."""
    fitted = list(query)
    while _encoded(fitted) > limit:
        i, part = max(((i, part) for i in range(len(fitted)) for part in (0, 1)),
                      key=lambda ip: len(quote(fitted[ip[0]][ip[1]], safe="")))
        key, value = fitted[i]
        fitted[i] = (key[: len(key) // 2], value) if part == 0 else (key, value[: len(value) // 2])
    return fitted


def _query_value(name: str) -> st.SearchStrategy[str]:
    if name == "token":
        return forged_connect_token()
    if name == "validationToken":
        return st.one_of(hostile_text(), st.builds(lambda n: "v" * n, st.sampled_from([2048, 2049, 20_000])))
    return hostile_text()


@st.composite
def requests_for(draw: st.DrawFn, op: Operation, world: World) -> FuzzRequest:
    method = draw(st.one_of(st.just(op.method), st.just(op.method), st.just(op.method), st.sampled_from(METHODS)))
    path = op.path
    for param in op.param("path"):
        value = draw(_path_value(param["name"], world))
        encoded = quote(value, safe="")
        while len(encoded) > MAX_URL_PART // 2:  # at most two path parameters per operation
            value = value[: len(value) // 2]
            encoded = quote(value, safe="")
        path = path.replace("{" + param["name"] + "}", encoded or "%20")
    query: list[tuple[str, str]] = []
    for param in op.param("query"):
        if draw(st.booleans()):
            query.append((param["name"], draw(_query_value(param["name"]))))
    query += draw(st.lists(st.tuples(hostile_text(10), hostile_text(40)), max_size=2))
    query = fit_query(query)
    headers: dict[str, str] = {}
    for param in op.param("header"):
        name = param["name"]
        if not draw(st.booleans()):
            continue
        if name == "Timum-Signature":
            headers[name] = draw(forged_signature())
        elif name == "X-Timum-Provider":
            headers[name] = draw(st.one_of(st.sampled_from(world.providers), header_text()))
        elif name == "Cookie":
            headers[name] = draw(st.one_of(
                st.builds(lambda v: f"timum-connect={v}", st.one_of(st.just(secrets.token_urlsafe(32)),
                                                                    header_text())), header_text()))
        else:
            headers[name] = draw(header_text())
    if op.function_key and draw(st.integers(0, 3)) > 0:  # mostly past the host's key check
        headers["x-functions-key"] = draw(st.one_of(st.just(world.function_key), header_text()))
    if draw(st.integers(0, 4)) == 0:
        headers[draw(st.sampled_from(["Accept-Language", "If-None-Match", "If-Modified-Since", "X-Forwarded-For",
                                      "Content-Encoding", "Transfer-Encoding-Hint"]))] = draw(header_text())
    body = b""
    if method not in ("GET", "HEAD") or draw(st.integers(0, 5)) == 0:
        media, body = draw(_body(op, world))
        if media:
            headers["Content-Type"] = media
    return FuzzRequest(method, "/api" + path, query, headers, body)


# --- checks ------------------------------------------------------------------------------------

#: The app's timers, disabled as Azure's AzureWebJobs.<name>.Disabled does: a sweep that runs while
#: an operation is fuzzed (the link watch, polling, renewals) would change stored state that the
#: "anonymous requests store nothing" check compares — the timers are not what is fuzzed.
QUIET_TIMERS = {f"AzureWebJobs.{name}.Disabled": "true"
                for name in ("renew_subscriptions", "poll_links", "purge_expired_sign_in_state", "watch_links")}


def snapshot(connection_string: str) -> dict[str, Any]:
    """Every table row (with its ETag) and every queue's messages, for comparison."""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    state: dict[str, Any] = {}
    with TableServiceClient.from_connection_string(connection_string) as tables:
        for table in tables.list_tables():
            client = tables.get_table_client(table.name)
            rows = sorted((str(e["PartitionKey"]), str(e["RowKey"]), str(e.metadata.get("etag")))
                          for e in client.list_entities())
            state[f"table:{table.name}"] = rows
    with QueueServiceClient.from_connection_string(connection_string) as queues:
        for queue in queues.list_queues():
            client = queues.get_queue_client(queue.name)
            props = client.get_queue_properties()
            peeked = sorted(m.content for m in client.peek_messages(max_messages=32))
            state[f"queue:{queue.name}"] = (props.approximate_message_count, peeked)
    return state


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key.startswith("table:") and (old or []) == [] and new == [] or old is None and new in ([], (0, [])):
            continue  # an empty table or queue created on first use holds nothing
        out.append(f"{key}: {str(old)[:200]} → {str(new)[:200]}")
    return out


@dataclass
class FuzzResult:
    operation: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    #: generated requests the HTTP client refused to send (never reached the service; not failures)
    unsendable: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (f"{self.operation}: {self.requests} requests, statuses {dict(sorted(self.statuses.items()))}"
                + (f", unsendable {dict(self.unsendable)}" if self.unsendable else "")
                + (f", FAILED: {self.failures[0][:600]}" if self.failures else ""))


def send(client: httpx.Client, base: str, request: FuzzRequest) -> httpx.Response:
    url = base + request.path
    return client.request(request.method, url, params=tuple(request.query), headers=request.headers,
                          content=request.body if request.body or request.method not in ("GET", "HEAD") else None)


def _shed(op: Operation, response: httpx.Response) -> bool:
    """The Graph webhook's deliberate 503 when a POST names more unknown subscriptions than it may
    look up now (Graph delivers again): load shedding, documented, not a failure."""
    from shared.http.graph_bp import DEFERRED_ANSWER

    return (response.status_code == 503 and op.path.startswith("/graph/") and "Retry-After" in response.headers
            and response.text == DEFERRED_ANSWER)


def check_response(op: Operation, request: FuzzRequest, response: httpx.Response) -> str | None:
    status = response.status_code
    if status >= 500 and not _shed(op, response):
        return f"{status} for {request.describe()}"
    if request.method == op.method and status not in op.statuses | HOST_STATUSES:
        return f"undocumented status {status} for {request.describe()}"
    return None


def fuzz_operation(stack: Stack, op: Operation, world: World, *, examples: int, seed: int = 0) -> FuzzResult:
    """Send ``examples`` generated requests for ``op``; record failures (the first, shrunk, per kind)."""
    result = FuzzResult(str(op))
    before = snapshot(stack.azurite.connection_string)
    client = httpx.Client(timeout=30.0)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(requests_for(op, world))
    def probe(request: FuzzRequest) -> None:
        result.requests += 1
        try:
            response = send(client, stack.base_url, request)
        except httpx.InvalidURL as exc:
            # The client refused before anything went out: nothing for the service to answer.
            result.unsendable[str(exc)] += 1
            return
        except httpx.HTTPError as exc:
            raise AssertionError(f"no answer ({type(exc).__name__}) for {request.describe()}") from None
        result.statuses[response.status_code] += 1
        problem = check_response(op, request, response)
        if problem is not None:
            raise AssertionError(problem)

    try:
        probe()
    except Exception as exc:  # Hypothesis raises one error, or a group of distinct ones
        found = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        result.failures += [(str(e).splitlines() or [repr(e)])[0] for e in found]
    finally:
        client.close()
    stack.wait_for(lambda: True, timeout=1)
    after = snapshot(stack.azurite.connection_string)
    changes = diff(before, after)
    if changes:
        result.failures.append("stored state changed: " + "; ".join(changes[:10]))
    return result


def build_world(stack: Stack) -> World:
    """One linked calendar with a live subscription and one ICS feed, so fuzzed ids land near real ones."""
    from devtools.stack_world import bulk_links, wait_quiet
    from shared.domain import LinkKey
    from shared.ics.tokens import FeedTokenRepository

    (link,) = bulk_links(stack, 1, provider="praxis-fuzz")
    token = stack.run(FeedTokenRepository(stack.storage).issue(LinkKey(link.provider, link.resource), "Raum"))
    wait_quiet(stack, timeout=60)
    sub = stack.graph.subscription(link.subscription_id)
    assert sub is not None and sub.client_state is not None
    return World(subscriptions=[(sub.id, sub.client_state)], providers=[link.provider, "praxis-andere"],
                 resources=[link.resource, "r9999"], ics_token=token, function_key=stack.env["FUNCTION_KEY"])


def run_fuzz(examples: int, *, only: Iterable[str] = (), log: Callable[[str], None] = print) -> list[FuzzResult]:
    from devtools.stack import start_stack

    wanted = set(only)
    stack = start_stack(seed_demo=False, extra_env=QUIET_TIMERS)
    try:
        world = build_world(stack)
        results = []
        for op in operations():
            if wanted and op.operation_id not in wanted:
                continue
            result = fuzz_operation(stack, op, world, examples=examples)
            log(result.line())
            results.append(result)
        return results
    finally:
        stack.stop()
