"""Re-encrypt every stored ciphertext with the active ``TOKEN_ENCRYPTION_KEYS`` key.

The first configured key encrypts, every configured key decrypts (``shared.crypto``). After a
new key is put first, rows written earlier stay sealed with the old key until something
rewrites them — an idle account or an ICS import link never would. ``reseal_all`` rewrites them
now, so the old key can be removed without losing a single row:

* ``accounts``  ``cache``             — MSAL token caches (associated data: the account id)
* ``links``     ``ics_url_encrypted`` — published calendar URLs of ICS imports (the link key)
* ``authflows`` ``data``              — pending sign-ins and admin-consent requests
* ``sessions``  ``data``              — open calendar choosers

Each row is rewritten only in its ciphertext column, conditionally on its ETag: a row that
changed meanwhile is read again (a concurrent writer sealed it with the active key anyway).
Rows sealed with a key that is no longer configured cannot be read; they are counted, never
deleted. The chooser's CSRF tokens are HMACs under sub-keys of *every* configured key, so a
chooser form rendered before the rotation still submits (``shared.connect.store``).

Run it from the command line with the app's settings in the environment::

    python -m shared.connect.rotation            # re-encrypt, print a JSON report
    python -m shared.connect.rotation --check    # only count; exit 1 while any row needs work

Nothing here logs or prints a plaintext or a ciphertext.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from shared.crypto import Cipher, DecryptionError
from shared.errors import Conflict, NotFound
from shared.storage.base import Entity, StoragePort, TablePort, decode_key

log = logging.getLogger(__name__)

#: attempts per row when concurrent writers keep changing it
_ATTEMPTS = 3


@dataclass
class TableReport:
    current: int = 0        # already sealed with the active key
    resealed: int = 0       # rewritten with the active key now
    unreadable: int = 0     # sealed with a key that is not configured (or damaged)
    busy: int = 0           # changed by others on every attempt; run again


@dataclass
class RotationReport:
    active_key: str
    tables: dict[str, TableReport] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        """Rows still not readable with the active key alone."""
        return sum(t.unreadable + t.busy for t in self.tables.values())

    def to_json(self) -> dict[str, object]:
        return {"active_key": self.active_key, "tables": {k: asdict(v) for k, v in self.tables.items()}}


@dataclass(frozen=True)
class _Column:
    table: str
    column: str
    aad: Callable[[Entity], str]


def _link_aad(row: Entity) -> str:
    return f"{decode_key(row.pk)}|{decode_key(str(row['RowKey']))}"


COLUMNS: tuple[_Column, ...] = (
    _Column("accounts", "cache", lambda row: f"accounts:{decode_key(row.pk)}"),
    _Column("links", "ics_url_encrypted", _link_aad),
    _Column("authflows", "data", lambda row: f"authflows:{row.pk}"),
    _Column("sessions", "data", lambda row: f"sessions:{row.pk}"),
)


async def _reseal_row(table: TablePort, spec: _Column, row: Entity, cipher: Cipher, report: TableReport,
                      *, check_only: bool) -> None:
    for _ in range(_ATTEMPTS):
        sealed = str(row.get(spec.column) or "")
        if not sealed:
            return
        if not cipher.needs_reencryption(sealed):
            report.current += 1
            return
        try:
            plain = cipher.decrypt(sealed, aad=spec.aad(row))
        except DecryptionError:
            report.unreadable += 1
            return
        if check_only:
            report.busy += 1
            return
        updated = {**row, spec.column: cipher.encrypt(plain, aad=spec.aad(row))}
        if "key_id" in row:
            updated["key_id"] = cipher.active_key_id
        try:
            await table.update(updated, etag=row.etag)
            report.resealed += 1
            return
        except NotFound:
            return
        except Conflict:
            fresh = await table.get(row.pk, str(row["RowKey"]))
            if fresh is None:
                return
            row = fresh
    report.busy += 1


async def reseal_all(storage: StoragePort, keys: tuple[tuple[str, bytes], ...], *,
                     check_only: bool = False) -> RotationReport:
    """Re-encrypt (or with ``check_only`` just count) every ciphertext not sealed with the active key.

    With ``check_only`` a row that needs work counts as ``busy``: ``report.pending`` is then
    the number of rows that would stop working if the other keys were removed now."""
    cipher = Cipher(keys)
    report = RotationReport(active_key=cipher.active_key_id)
    for spec in COLUMNS:
        table = storage.table(spec.table)
        counts = report.tables.setdefault(spec.table, TableReport())
        for row in await table.query():
            await _reseal_row(table, spec, row, cipher, counts, check_only=check_only)
    return report


async def _main(check_only: bool) -> int:
    from shared import wiring

    settings = wiring.settings()
    storage = wiring.get_storage()
    try:
        report = await reseal_all(storage, settings.token_encryption_keys, check_only=check_only)
    finally:
        await storage.close()
    print(json.dumps(report.to_json(), indent=2))
    if report.pending:
        print(f"{report.pending} row(s) are not sealed with key '{report.active_key}' yet: "
              "keep the old key configured" + (" and run without --check" if check_only else " and run again"),
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.connect.rotation",
                                     description="Re-encrypt stored credentials with the active encryption key.")
    parser.add_argument("--check", action="store_true", help="only count rows that still need re-encryption")
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.check))


if __name__ == "__main__":  # pragma: no cover - command-line entry
    sys.exit(main())
