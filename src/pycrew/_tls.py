"""TLS configuration: ``none``, ``automatic`` or ``custom``, turned into SSL contexts.

``automatic`` makes a one-time certificate authority and server certificate in
memory at every controller start; workers receive only the public CA
certificate. ``custom`` loads the user's key and certificate chain (own
certificate first, the root last). In every mode workers verify the
controller, and the HMAC handshake then runs inside the encrypted channel.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._errors import TlsConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

Mode = Literal["none", "automatic", "custom"]
_MODES = ("none", "automatic", "custom")


@dataclass(frozen=True)
class TlsSession:
    """What one controller start needs: a server context and the workers' trust anchor."""

    server: ssl.SSLContext
    trust_pem: str


class TLS:
    """How the controller's port is protected.

    Args:
        mode: ``"none"`` (plain TCP; the secret handshake still keeps rogue
            workers out), ``"automatic"`` (a fresh in-memory certificate per
            start) or ``"custom"`` (your key and certificates).
        key: path to a PEM private key (``custom`` only; PKCS#1 or PKCS#8).
        password: a callable returning the key's password (``custom`` only).
        password_env: name of an environment variable holding the key's
            password (``custom`` only). Never write the password in code.
        certificates: PEM certificate files, your certificate first and the
            root of its chain last (``custom`` only).

    Raises:
        TlsConfigError: a mode or file that cannot work.
    """

    def __init__(
        self,
        mode: Mode = "none",
        *,
        key: str | os.PathLike[str] | None = None,
        password: Callable[[], str | bytes] | None = None,
        password_env: str | None = None,
        certificates: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        if mode not in _MODES:
            raise TlsConfigError(f"TLS mode must be one of {_MODES}, got {mode!r}")
        custom_fields = (key, password, password_env, certificates)
        if mode != "custom" and any(f is not None for f in custom_fields):
            raise TlsConfigError(
                f"key, password, password_env and certificates apply only to mode "
                f"'custom', not {mode!r}"
            )
        if password is not None and password_env is not None:
            raise TlsConfigError("give the key password as a callable or an env var, not both")
        self.mode: Mode = mode
        self.key = Path(key).expanduser() if key is not None else None
        self._password = password
        self.password_env = password_env
        self.certificates = [Path(c).expanduser() for c in certificates or ()]
        if mode == "custom":
            self._check_custom_files()

    def __repr__(self) -> str:
        if self.mode != "custom":
            return f"TLS(mode={self.mode!r})"
        certs = [str(c) for c in self.certificates]
        return f"TLS(mode='custom', key={str(self.key)!r}, certificates={certs!r})"

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def _check_custom_files(self) -> None:
        if self.key is None or not self.certificates:
            raise TlsConfigError("TLS mode 'custom' needs key= and certificates=")
        for path in (self.key, *self.certificates):
            if not path.is_file():
                raise TlsConfigError(f"TLS file not found: {path}")
        if "PRIVATE KEY-----" not in self.key.read_text(errors="replace"):
            raise TlsConfigError(f"{self.key} holds no PEM private key")
        for cert in self.certificates:
            if "-----BEGIN CERTIFICATE-----" not in cert.read_text(errors="replace"):
                raise TlsConfigError(f"{cert} holds no PEM certificate")

    def _key_password(self) -> bytes | None:
        if self._password is not None:
            value = self._password()
            return value.encode() if isinstance(value, str) else value
        if self.password_env is not None:
            if self.password_env not in os.environ:
                raise TlsConfigError(
                    f"environment variable {self.password_env} (the key password) is not set"
                )
            return os.environ[self.password_env].encode()
        return None

    def session(self, host: str) -> TlsSession | None:
        """Build the contexts for one controller start (``None`` in mode ``none``)."""
        if self.mode == "none":
            return None
        if self.mode == "automatic":
            chain_pem, key_pem, trust_pem = _automatic_credentials(host)
            return TlsSession(_server_context(chain_pem, key_pem, None), trust_pem)
        assert self.key is not None
        chain_pem = "".join(c.read_text() for c in self.certificates)
        trust_pem = self.certificates[-1].read_text()
        return TlsSession(
            _server_context(chain_pem, self.key.read_text(), self._key_password()), trust_pem
        )


def client_context(trust_pem: str) -> ssl.SSLContext:
    """The worker's context: verify the controller against ``trust_pem``, host name included."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=trust_pem)
    return ctx


def _server_context(chain_pem: str, key_pem: str, password: bytes | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads only files: write them into a private folder and
    # remove them at once, so the key never rests on disk.
    with tempfile.TemporaryDirectory(prefix="pycrew-tls-") as folder:
        os.chmod(folder, 0o700)
        cert_path = Path(folder, "chain.pem")
        key_path = Path(folder, "key.pem")
        cert_path.write_text(chain_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key_pem)
        try:
            ctx.load_cert_chain(cert_path, key_path, password=password)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsConfigError(f"could not load the TLS key and certificates: {exc}") from exc
    return ctx


def _automatic_credentials(host: str) -> tuple[str, str, str]:
    """A one-time CA and a server certificate for ``host``: (chain, key, CA) as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    lifetime = datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pycrew one-time CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    if host != "127.0.0.1":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem).decode()
    chain_pem = cert.public_bytes(pem).decode() + ca_pem
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return chain_pem, key_pem, ca_pem


def resolve_tls(tls: TLS | str | None) -> TLS:
    """Accept ``None``, a mode name or a ``TLS`` object."""
    if tls is None:
        return TLS("none")
    if isinstance(tls, TLS):
        return tls
    if isinstance(tls, str):
        if tls == "custom":
            raise TlsConfigError("for mode 'custom', pass pycrew.TLS('custom', key=..., ...)")
        if tls not in _MODES:
            raise TlsConfigError(f"tls must be one of {_MODES} or a pycrew.TLS, got {tls!r}")
        return TLS(tls)  # type: ignore[arg-type]
    raise TypeError(f"tls must be None, a mode name or a pycrew.TLS, not {type(tls).__name__}")
