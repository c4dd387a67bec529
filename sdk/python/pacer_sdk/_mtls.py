"""go-plugin's AutoMTLS, plugin side (and the host side, for the test harness).

The runner generates a self-signed certificate for each plugin process and
passes it in PLUGIN_CLIENT_CERT (PEM). The plugin generates its own, serves
TLS with it, accepts only clients presenting the runner's certificate, and
returns its certificate in the handshake line: the DER bytes in base64
without padding (Go's base64.RawStdEncoding), since the line cannot hold PEM's
newlines. Both certificates are valid for the name "localhost", which is what
each side verifies.
"""

from __future__ import annotations

import base64
import datetime
from typing import Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "localhost"


def generate(organization: str = "Pacer plugin") -> Tuple[bytes, bytes, bytes]:
    """A fresh self-signed certificate as go-plugin makes them (ECDSA,
    CA, server and client use, for "localhost", backdated 30 s). Returns
    (certificate PEM, private key PEM, certificate DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST), x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + datetime.timedelta(days=30 * 365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert_pem, key_pem, cert.public_bytes(serialization.Encoding.DER)


def encode_cert(der: bytes) -> str:
    """The handshake's certificate field: base64 without padding."""
    return base64.b64encode(der).decode("ascii").rstrip("=")


def decode_cert(field: str) -> bytes:
    """The certificate field back to a PEM certificate."""
    return pem(base64.b64decode(field + "=" * (-len(field) % 4), validate=True))


def pem(der: bytes) -> bytes:
    """A DER certificate as PEM; raises ValueError if it is not one."""
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
