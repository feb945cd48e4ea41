"""Demo data of the sandbox's directory: the service's app registration and two practices.

Ids are derived from the domains and addresses (UUID 5), so they are the same on every start:
a tenant id or user id copied into local settings or a bookmark stays valid.

* "Physiopraxis Sonnenschein" (``praxis-sonnenschein.example``): users may consent themselves.
  Dr. Anna Weber (administrator), Jonas Becker, Lena Hoffmann.
* "Klinik Nord" (``klinik-nord.example``): user consent is forbidden, so connecting needs an
  administrator first. Petra Schulz (administrator), Tobias Wagner.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.directory import AppRegistration, Directory, SandboxUser

_NS = uuid.UUID("6f1c9a52-3f0e-4b7c-9d55-5a4e2c1b7d10")


@dataclass(frozen=True)
class DemoUser:
    display_name: str
    local_part: str
    is_admin: bool = False


@dataclass(frozen=True)
class DemoTenant:
    name: str
    domain: str
    user_consent_allowed: bool
    users: tuple[DemoUser, ...]


DEMO_TENANTS = (
    DemoTenant("Physiopraxis Sonnenschein", "praxis-sonnenschein.example", True, (
        DemoUser("Dr. Anna Weber", "anna.weber", is_admin=True),
        DemoUser("Jonas Becker", "jonas.becker"),
        DemoUser("Lena Hoffmann", "lena.hoffmann"),
    )),
    DemoTenant("Klinik Nord", "klinik-nord.example", False, (
        DemoUser("Petra Schulz", "petra.schulz", is_admin=True),
        DemoUser("Tobias Wagner", "tobias.wagner"),
    )),
)


def tenant_id_for(domain: str) -> str:
    return str(uuid.uuid5(_NS, f"tenant:{domain.lower()}"))


def user_id_for(mail: str) -> str:
    return str(uuid.uuid5(_NS, f"user:{mail.lower()}"))


def register_app(directory: Directory, config: SandboxConfig) -> AppRegistration:
    """The service's app registration (client id, secret and redirect URIs from the config).
    Registered even without demo data: without it the service cannot sign anybody in."""
    existing = directory.apps.get(config.client_id)
    if existing is not None:
        for uri in config.redirect_uris:
            if uri not in existing.redirect_uris:
                existing.redirect_uris.append(uri)
        return existing
    return directory.add_app(config.client_id, config.client_secret, config.redirect_uris)


def seed_directory(directory: Directory) -> list[SandboxUser]:
    """Add the demo tenants and users (idempotent); returns every demo user."""
    users: list[SandboxUser] = []
    for demo in DEMO_TENANTS:
        tenant = directory.tenant(demo.domain) or directory.add_tenant(
            demo.name, demo.domain, tenant_id=tenant_id_for(demo.domain),
            user_consent_allowed=demo.user_consent_allowed)
        for person in demo.users:
            mail = f"{person.local_part}@{demo.domain}"
            user = directory.user(mail) or directory.add_user(
                tenant.id, person.display_name, person.local_part, user_id=user_id_for(mail),
                is_admin=person.is_admin)
            users.append(user)
    return users
