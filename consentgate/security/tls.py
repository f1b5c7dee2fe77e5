"""A local certificate authority and a broker certificate for ``consentgate up --secure``.

Made with ``cryptography``; written as PEM, which Kafka 4 reads directly (``ssl.keystore.type=PEM``)
and librdkafka trusts through ``ssl.ca.location``. The CA's private key is not kept: it signs the
broker certificate once and is discarded, so nothing on disk can mint another trusted certificate.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = timedelta(days=825)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate clients trust
    keystore: Path  # the broker's private key followed by its certificate chain (0600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "consentgate embedded cluster"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(now: datetime, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[bytes, bytes]:
    """(CA certificate PEM, broker keystore PEM: PKCS#8 key + certificate + CA certificate)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("consentgate local CA")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + VALIDITY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(_name("consentgate broker")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    keystore = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
                + cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    return ca_pem, keystore


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that only its owner can read, created so from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def ensure(directory: Path, now: datetime | None = None) -> TlsFiles:
    """The cluster's TLS files in ``directory``, issued on first use and kept afterwards."""
    files = TlsFiles(directory / "ca.pem", directory / "broker.pem")
    if not (files.ca.exists() and files.keystore.exists()):
        ca_pem, keystore = issue(now or datetime.now(timezone.utc))
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(files.keystore, keystore)
        files.ca.write_bytes(ca_pem)
    return files
