"""A self-signed certificate for LAN use, made once and kept in the state directory.

Browsers give camera and microphone only to a secure context: ``localhost`` is one,
``http://192.168.1.20:8080`` is not. ``sealroom serve --self-signed`` makes an ECDSA
P-256 key and a certificate whose subjectAltName (RFC 5280 §4.2.1.6) lists localhost,
the loopback addresses, this machine's name and addresses and any ``--tls-names``, and
keeps both under ``<state dir>/tls/`` so the fingerprint people check stays the same
across restarts. A new one is made only when the old one is missing, expires within
30 days, or does not cover a name asked for.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/sealroom``, else ``~/.local/state/sealroom`` (XDG Base Directory)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sealroom"


@dataclass(frozen=True)
class SelfSigned:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the DER certificate, AA:BB:… (what browsers show)
    spki_sha256: str  # base64 SHA-256 of the SubjectPublicKeyInfo (Chromium's trust flag)
    created: bool  # made now, rather than reused


def fingerprint(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def spki_sha256(cert: x509.Certificate) -> str:
    """What ``--ignore-certificate-errors-spki-list`` and HPKP pins take (RFC 7469 §2.4)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def local_names(host: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The names and addresses a certificate for ``host`` should cover."""
    names = ["localhost", "127.0.0.1", "::1", *extra]
    if host in WILDCARD_HOSTS:
        hostname = socket.gethostname()
        names += [hostname, hostname + ".local"]
        try:
            from aioice.ice import get_host_addresses

            names += get_host_addresses(use_ipv4=True, use_ipv6=True)
        except Exception:  # no interfaces to list: the loopback names remain
            log.debug("could not list this machine's addresses")
    else:
        names.append(host)
    out: list[str] = []
    for name in names:
        if name and name not in out:
            out.append(name)
    return out


def _san(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _covers(cert: x509.Certificate, names: list[str]) -> bool:
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(general in have for general in _san(names))


def _usable(cert: x509.Certificate, names: list[str]) -> bool:
    now = datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc - RENEW_BEFORE > now and _covers(cert, names)


def make(names: list[str]) -> tuple[bytes, bytes]:
    """PEM certificate and PEM PKCS#8 key, self-signed, for ``names``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sealroom {names[0]}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(state_dir: Path, names: list[str]) -> SelfSigned:
    """The kept certificate if it still fits ``names``; else a new one, saved."""
    tls_dir = state_dir / "tls"
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if _usable(cert, names):
            return SelfSigned(cert_path, key_path, fingerprint(cert), spki_sha256(cert), False)
        log.warning("self-signed certificate expires soon or misses a name: making a new one")
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_pem, key_pem = make(names)
    # The key is written 0600 from the start (never world-readable, not even briefly).
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    tmp_key.replace(key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert_pem)
    tmp_cert.replace(cert_path)
    cert = x509.load_pem_x509_certificate(cert_pem)
    return SelfSigned(cert_path, key_path, fingerprint(cert), spki_sha256(cert), True)
