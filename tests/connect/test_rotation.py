"""The runbook's rotation of ``TOKEN_ENCRYPTION_KEYS``, step by step, on Azurite with a real
sign-in at the sandbox identity platform:

1. ``k2,k1`` — new key first: everything old still opens; a chooser form rendered under ``k1``
   still submits.
2. ``python -m shared.connect.rotation`` — every ciphertext (token caches, ICS import URLs,
   pending sign-ins and consent requests, chooser sessions) is re-encrypted with ``k2``;
   ``--check`` then exits 0.
3. ``k2`` alone — nothing was lost: the account still gets tokens, the ICS URL still decrypts,
   the pending consent request still opens.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from devtools import azurite as azurite_mod
from devtools.sandbox.server import RunningSandbox
from shared.adapters.timum_memory import MemoryTimum
from shared.config import Settings
from shared.connect import flow
from shared.connect.credentials import RealGraphProvider
from shared.connect.outcomes import Redirect
from shared.connect.rotation import reseal_all
from shared.connect.store import AuthFlowRepository, ConnectContext, PendingFlow
from shared.context import Services
from shared.crypto import Cipher, DecryptionError
from shared.domain import Link, LinkKey, LinkMode
from shared.http.connect_bp import handle_calendars, session_cookie_name
from shared.ics import api as ics_api
from shared.repos.links import LinkRepository
from shared.storage.azure import AzureStorage
from tests.support.connect_world import (
    KEY_ONE,
    MicrosoftSignIn,
    connect_token,
    http_request,
    make_key,
    sandbox_settings,
    settings_env,
)
from tests.support.storage import azure_storage, running_azurite

ROOT = Path(__file__).resolve().parents[2]
KEY_TWO = f"k2:{make_key()}"
ANNA = "anna.weber@praxis-sonnenschein.example"


@pytest.fixture(scope="module")
def store() -> Iterator[azurite_mod.Azurite]:
    # Its own Azurite: the command-line tool reads the app's (unprefixed) tables.
    with running_azurite() as server:
        yield server


@pytest.fixture
async def storage(store: azurite_mod.Azurite) -> AsyncIterator[AzureStorage]:
    async with azure_storage(store.connection_string, isolated=False) as s:
        yield s


def _services(sandbox: RunningSandbox, storage: AzureStorage, keys: str, store: azurite_mod.Azurite) -> Services:
    settings = sandbox_settings(sandbox, TOKEN_ENCRYPTION_KEYS=keys, AzureWebJobsStorage=store.connection_string)
    timum = MemoryTimum()
    timum.add_resource("prov-1", "Dr. Anna Weber", resource_id="res-1")
    return Services(settings=settings, storage=storage, timum=timum, graph=RealGraphProvider(settings, storage))


def _rotation_cli(store: azurite_mod.Azurite, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(TOKEN_ENCRYPTION_KEYS=keys, AzureWebJobsStorage=store.connection_string)}
    return subprocess.run([sys.executable, "-m", "shared.connect.rotation", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _keys(settings: Settings) -> tuple[tuple[str, bytes], ...]:
    return settings.token_encryption_keys


async def test_rotation_runbook_end_to_end(sandbox: RunningSandbox, store: azurite_mod.Azurite,
                                          storage: AzureStorage, microsoft: MicrosoftSignIn) -> None:
    old = _services(sandbox, storage, KEY_ONE, store)
    # --- before: a signed-in account with an open chooser, an ICS import, a pending consent request
    started = await flow.start(old, connect_token())
    assert isinstance(started, Redirect) and started.binding is not None
    signed_in = await flow.callback(old, microsoft.run(started.location, ANNA), binding=started.binding.value)
    assert isinstance(signed_in, Redirect) and signed_in.session_id
    session_id = signed_in.session_id
    cookie = {"Cookie": f"{session_cookie_name(old)}={session_id}"}
    page = (await handle_calendars(old, http_request("GET", "/api/connect/calendars", headers=cookie))).get_body()
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page)
    calendar = re.search(rb'name="calendar" id="[^"]+" value="([^"]+)" required checked', page)
    assert csrf and calendar
    await ics_api.set_ics_import(old, "prov-1", "res-ics", {"url": "https://calendar.example/published/x.ics"})
    consent_state = "consent-" + "s" * 30
    await AuthFlowRepository(storage, Cipher(_keys(old.settings))).put(
        consent_state, PendingFlow(kind="adminconsent", context=ConnectContext("prov-1", None, "de", "x"), flow={},
                                   tenant="organizations"), expires_at=old.clock() + timedelta(days=1))

    # --- step 1: new key first
    rotating = _services(sandbox, storage, f"{KEY_TWO},{KEY_ONE}", store)
    new_only = Cipher(_keys(_services(sandbox, storage, KEY_TWO, store).settings))
    ics = await LinkRepository(storage).require(LinkKey("prov-1", "res-ics"))
    with pytest.raises(DecryptionError):   # without step 2, removing k1 would lose the ICS URL
        new_only.decrypt_str(ics.ics_url_encrypted, aad="prov-1|res-ics")
    check = _rotation_cli(store, f"{KEY_TWO},{KEY_ONE}", "--check")
    assert check.returncode == 1 and "keep the old key" in check.stderr

    # --- step 2: re-encrypt everything
    done = _rotation_cli(store, f"{KEY_TWO},{KEY_ONE}")
    assert done.returncode == 0, done.stderr
    assert '"resealed": 1' in done.stdout            # the account cache, the ICS URL, ...
    report = await reseal_all(storage, _keys(rotating.settings), check_only=True)
    assert report.pending == 0
    assert {name: t.resealed for name, t in report.tables.items()} == {
        "accounts": 0, "links": 0, "authflows": 0, "sessions": 0}
    assert report.tables["accounts"].current == 1 and report.tables["links"].current == 1
    assert report.tables["sessions"].current == 1 and report.tables["authflows"].current >= 1
    assert _rotation_cli(store, f"{KEY_TWO},{KEY_ONE}", "--check").returncode == 0

    # the chooser form rendered under k1 still submits during the rotation
    form = urlencode({"csrf": csrf.group(1).decode(), "calendar": calendar.group(1).decode(), "action": "link"})
    posted = await handle_calendars(rotating, http_request(
        "POST", "/api/connect/calendars", body=form.encode(),
        headers={**cookie, "Content-Type": "application/x-www-form-urlencoded"}))
    assert posted.status_code == 303, posted.get_body()[:300]
    link = await LinkRepository(storage).require(LinkKey("prov-1", "res-1"))

    # --- step 3: the old key goes; nothing is lost
    final = _services(sandbox, storage, KEY_TWO, store)
    ics = await LinkRepository(storage).require(LinkKey("prov-1", "res-ics"))
    assert new_only.decrypt_str(ics.ics_url_encrypted, aad="prov-1|res-ics").endswith("/published/x.ics")
    assert await AuthFlowRepository(storage, Cipher(_keys(final.settings))).peek(
        consent_state, now=final.clock()) is not None
    graph = await final.graph.for_link(Link(
        provider_id="prov-1", resource_id="res-1", mode=LinkMode.DELEGATED, tenant_id=link.tenant_id,
        mailbox_id=link.mailbox_id, calendar_id=link.calendar_id, calendar_name="", calendar_owner="",
        account_id=link.account_id))
    try:
        me = await graph.me()
    finally:
        await graph.close()
    assert me["id"]
