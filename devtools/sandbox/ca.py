"""The sandbox's own certificate authority and the server certificate of the HTTPS listener.

MSAL and azure-identity refuse plain-http authorities, so the identity and Graph stand-ins
serve HTTPS. The service trusts the sandbox by pointing its CA bundle at ``ca.pem`` (MSAL
``verify=``, httpx ``verify=``, azure-identity ``connection_verify=``); nothing is added to
the system trust store.

Files live in ``config.state_dir`` and are reused across restarts while they are valid, so a
service that already loaded ``ca.pem`` keeps working after the sandbox restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"

#: names the server certificate must cover; clients reach the sandbox by either
SERVER_DNS_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")

_CA_LIFETIME = dt.timedelta(days=3650)
#: browsers reject leaf certificates valid for more than 398 days
_SERVER_LIFETIME = dt.timedelta(days=397)
#: regenerate a little before expiry rather than serve a certificate that dies mid-run
_RENEW_MARGIN = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertificatePaths:
    ca: Path
    cert: Path
    key: Path


def ensure_certificates(state_dir: Path, *, extra_hosts: tuple[str, ...] = ()) -> CertificatePaths:
    """Return the CA and server certificate in ``state_dir``, creating or renewing them if needed.

    ``extra_hosts`` (host names or IP literals) are added to the server certificate, e.g. when
    the sandbox listens on another interface.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(state_dir / CA_FILE, state_dir / CERT_FILE, state_dir / KEY_FILE)
    ca_key_path = state_dir / CA_KEY_FILE
    hosts = _wanted_hosts(extra_hosts)

    ca = _load_valid_ca(paths.ca, ca_key_path)
    if ca is None:
        ca = _create_ca()
        _write(paths.ca, ca[0].public_bytes(serialization.Encoding.PEM))
        _write(ca_key_path, _key_pem(ca[1]), private=True)
        server_ok = False
    else:
        server_ok = _server_cert_valid(paths.cert, paths.key, ca[0], hosts)
    if not server_ok:
        cert, key = _create_server_cert(ca[0], ca[1], hosts)
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write(paths.key, _key_pem(key), private=True)
    return paths


def client_ssl_context(ca_path: Path | str) -> ssl.SSLContext:
    """A client TLS context trusting the sandbox CA (httpx deprecates ``verify=<path>``)."""
    return ssl.create_default_context(cafile=str(ca_path))


# --- creation ------------------------------------------------------------------------------

def _create_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "timum Outlook Sync Sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, "timum Outlook Sync Sandbox CA"),
    ])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _create_server_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                        hosts: set[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    san: list[x509.GeneralName] = []
    for host in sorted(hosts):
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _SERVER_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


# --- validation ----------------------------------------------------------------------------

def _load_valid_ca(ca_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_public_key(cert, key):
        return None
    if not _fresh(cert):
        return None
    return cert, key


def _server_cert_valid(cert_path: Path, key_path: Path, ca_cert: x509.Certificate, hosts: set[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_public_key(cert, key) or not _fresh(cert):
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    covered = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    covered |= {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    return hosts <= covered


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _fresh(cert: x509.Certificate) -> bool:
    now = _now()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - _RENEW_MARGIN > now


# --- helpers -------------------------------------------------------------------------------

def _wanted_hosts(extra: tuple[str, ...]) -> set[str]:
    hosts = {h.lower() for h in SERVER_DNS_NAMES} | set(SERVER_IPS)
    for host in extra:
        try:
            hosts.add(str(ipaddress.ip_address(host)))
        except ValueError:
            hosts.add(host.lower())
    return hosts


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    # Write next to the target and rename, so a concurrent reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
