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
import secrets
import ssl
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ArgumentTypeError, CrewWarning, TlsConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# cryptography is imported inside the functions that need it: it is slow to
# import, and only custom certificates need it before a start.

Mode = Literal["none", "automatic", "custom"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_MODES = ("none", "automatic", "custom")
#: a certificate this close to its end date gets a warning when loaded
EXPIRY_WARNING = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsSession:
    """What one controller start needs: a server context, the workers' trust
    anchor, and the name workers check (``None``: the host they dial)."""

    server: ssl.SSLContext
    trust_pem: str
    server_name: str | None = None


@dataclass(frozen=True)
class _Custom:
    """A custom key and chain, read and checked."""

    chain: list[x509.Certificate]
    labels: list[str]
    key: PrivateKeyTypes


class TLS:
    """How the controller's port is protected.

    Args:
        mode: ``"none"`` (plain TCP; the secret handshake still keeps rogue
            workers out), ``"automatic"`` (a fresh in-memory certificate per
            start) or ``"custom"`` (your key and certificates).
        key: path to a PEM private key (``custom`` only): PKCS#8, plain or
            encrypted, or the traditional PKCS#1 (RSA) and SEC1 (EC) forms.
        password: the key's password (``custom`` only): best a callable that
            returns it, such as ``lambda: keyring.get_password("pycrew", "tls")``.
            A literal string works too, but it is never shown, logged, pickled
            or sent to workers.
        password_env: instead of ``password``, the name of an environment
            variable holding it (``custom`` only).
        certificates: PEM certificate files, your certificate first, then each
            issuer, the root last (``custom`` only). A file may hold several.
            Workers trust exactly the root.
        server_name: the name workers check the certificate against, when it is
            not the controller's host address (``custom`` only).
        allow_readable_key: accept a key file that group or others may read.

    The key and chain are checked here, and again at each controller start:
    the files exist and parse, the key belongs to the first certificate, each
    certificate is signed by the next, the last is a self-signed root, and none
    has expired (one that expires within 30 days warns).

    Raises:
        TlsConfigError: a mode, file, password or chain that cannot work; the
            message names the file.
    """

    def __init__(
        self,
        mode: Mode = "none",
        *,
        key: str | os.PathLike[str] | None = None,
        password: str | bytes | Callable[[], str | bytes] | None = None,
        password_env: str | None = None,
        certificates: Sequence[str | os.PathLike[str]] | None = None,
        server_name: str | None = None,
        allow_readable_key: bool = False,
    ) -> None:
        if mode not in _MODES:
            raise TlsConfigError(f"TLS mode must be one of {_MODES}, got {mode!r}")
        custom_fields = (key, password, password_env, certificates, server_name)
        if mode != "custom" and any(f is not None for f in custom_fields):
            raise TlsConfigError(
                "key, password, password_env, certificates and server_name apply only to "
                f"mode 'custom', not {mode!r}"
            )
        if password is not None and password_env is not None:
            raise TlsConfigError("give the key password as password= or password_env=, not both")
        if password is not None and not (callable(password) or isinstance(password, (str, bytes))):
            raise TlsConfigError(
                "password must be a callable returning the password, or a string; "
                f"not {type(password).__name__}"
            )
        if password_env is not None and (not isinstance(password_env, str) or not password_env):
            raise TlsConfigError("password_env must name an environment variable")
        if server_name is not None and (not isinstance(server_name, str) or not server_name):
            raise TlsConfigError("server_name must be a non-empty host name")
        self.mode: Mode = mode
        self.key = Path(key).expanduser() if key is not None else None
        self._password = password
        self.password_env = password_env
        self.certificates = [Path(c).expanduser() for c in certificates or ()]
        self.server_name = server_name
        self.allow_readable_key = bool(allow_readable_key)
        if mode == "custom":
            self._load(warn=True)

    def __repr__(self) -> str:
        if self.mode != "custom":
            return f"TLS(mode={self.mode!r})"
        certs = [str(c) for c in self.certificates]
        extra = f", server_name={self.server_name!r}" if self.server_name else ""
        return f"TLS(mode='custom', key={str(self.key)!r}, certificates={certs!r}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        if isinstance(self._password, (str, bytes)):
            raise ArgumentTypeError(
                "a pycrew.TLS holding a literal key password is not pickled; "
                "give the password as password_env= or a callable instead"
            )
        return self.__dict__.copy()

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    # ------------------------------------------------------------ loading
    def _key_password(self) -> bytes | None:
        source = self._password
        if source is None and self.password_env is not None:
            if self.password_env not in os.environ:
                raise TlsConfigError(
                    f"environment variable {self.password_env} (the password of {self.key}) "
                    "is not set"
                )
            source = os.environ[self.password_env]
        if callable(source):
            try:
                source = source()
            except Exception as exc:
                raise TlsConfigError(
                    f"the password callable for {self.key} failed: {type(exc).__name__}"
                ) from None
            if not isinstance(source, (str, bytes)):
                raise TlsConfigError(
                    f"the password callable for {self.key} returned "
                    f"{type(source).__name__}, not a string"
                )
        return source.encode() if isinstance(source, str) else source

    def _load(self, warn: bool) -> _Custom:
        if self.key is None or not self.certificates:
            raise TlsConfigError("TLS mode 'custom' needs key= and certificates=")
        for path in (self.key, *self.certificates):
            if not path.is_file():
                raise TlsConfigError(f"TLS file not found: {path}")
        self._check_key_mode(self.key)
        private_key = self._read_key(self.key)
        chain: list[x509.Certificate] = []
        labels: list[str] = []
        for path in self.certificates:
            found = _read_certificates(path)
            chain += found
            labels += (
                [str(path)]
                if len(found) == 1
                else [f"{path} (#{i + 1})" for i in range(len(found))]
            )
        _check_chain(private_key, self.key, chain, labels, warn)
        return _Custom(chain, labels, private_key)

    def _check_key_mode(self, path: Path) -> None:
        mode = path.stat().st_mode & 0o777
        if os.name == "posix" and mode & 0o077 and not self.allow_readable_key:
            raise TlsConfigError(
                f"the private key {path} may be read by other users (mode {mode:o}): "
                f"run chmod 600 {path}, or pass allow_readable_key=True if that is intended"
            )

    def _read_key(self, path: Path) -> PrivateKeyTypes:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization

        data = path.read_bytes()
        if b"PRIVATE KEY-----" not in data:
            raise TlsConfigError(f"{path} holds no PEM private key")
        password = self._key_password()
        try:
            return serialization.load_pem_private_key(data, password)
        except TypeError:
            if password is None:
                raise TlsConfigError(
                    f"the private key {path} is encrypted: give its password with "
                    "password= or password_env="
                ) from None
            # a password for a key that has none: harmless
            return serialization.load_pem_private_key(data, None)
        except (ValueError, UnsupportedAlgorithm):
            why = "the password is wrong, or " if password is not None else ""
            raise TlsConfigError(
                f"could not read the private key {path}: {why}it is not a PEM key pycrew reads "
                "(PKCS#8, PKCS#1 or SEC1)"
            ) from None

    # ------------------------------------------------------------ sessions
    def session(self, host: str) -> TlsSession | None:
        """Build the contexts for one controller start (``None`` in mode ``none``)."""
        if self.mode == "none":
            return None
        if self.mode == "automatic":
            chain_pem, key, trust_pem = _automatic_credentials(host)
            return TlsSession(_server_context(chain_pem, *_sealed(key)), trust_pem)
        from cryptography.hazmat.primitives import serialization

        custom = self._load(warn=False)
        _check_name(custom.chain[0], custom.labels[0], self.server_name or host)
        pem = serialization.Encoding.PEM
        chain_pem = "".join(c.public_bytes(pem).decode() for c in custom.chain)
        # the key read (and decrypted) once above is handed on sealed: the
        # password is not asked for twice
        context = _server_context(chain_pem, *_sealed(custom.key))
        return TlsSession(context, custom.chain[-1].public_bytes(pem).decode(), self.server_name)


def _read_certificates(path: Path) -> list[x509.Certificate]:
    from cryptography import x509

    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TlsConfigError(f"{path} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsConfigError(f"could not parse the certificate in {path}: {exc}") from None


def _check_chain(
    key: PrivateKeyTypes,
    key_path: Path,
    chain: list[x509.Certificate],
    labels: list[str],
    warn: bool,
) -> None:
    """The key fits the first certificate, each is signed by the next, the last is a root."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(*spki):
        raise TlsConfigError(
            f"the private key {key_path} does not belong to the first certificate, {labels[0]}"
        )
    now = datetime.datetime.now(datetime.timezone.utc)
    for cert, label in zip(chain, labels, strict=True):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if end < now:
            raise TlsConfigError(f"the certificate {label} expired on {end:%Y-%m-%d %H:%M} UTC")
        if start > now:
            raise TlsConfigError(
                f"the certificate {label} is not valid before {start:%Y-%m-%d %H:%M} UTC"
            )
        if warn and end - now < EXPIRY_WARNING:
            warnings.warn(
                f"the certificate {label} expires on {end:%Y-%m-%d} ({(end - now).days} days)",
                CrewWarning,
                stacklevel=4,
            )
    for i, cert in enumerate(chain):
        issuer = chain[i + 1] if i + 1 < len(chain) else cert
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            if issuer is cert:
                raise TlsConfigError(
                    f"the last certificate, {labels[i]}, is not a self-signed root "
                    f"(its issuer is {cert.issuer.rfc4514_string()}): add the root last"
                ) from None
            raise TlsConfigError(
                f"the certificate {labels[i]} is not signed by the next one, {labels[i + 1]} "
                f"(its issuer is {cert.issuer.rfc4514_string()}): give your certificate "
                "first, then each issuer in turn, the root last; is one missing or out of order?"
            ) from None


def _names(cert: x509.Certificate) -> tuple[list[str], list[IPAddress]]:
    """The DNS names and IP addresses a certificate is for."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(a.value) for a in common], []
    return san.get_values_for_type(x509.DNSName), [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    ]


def _check_name(cert: x509.Certificate, label: str, expected: str) -> None:
    """Fail at start, not in every worker, when workers could not verify the name."""
    from cryptography import x509

    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        # Python's ssl (like browsers) checks names only in subjectAltName: a
        # name in the subject's CN alone is never matched
        common = ", ".join(_names(cert)[0]) or "no name"
        kind = "IP" if _is_ip(expected) else "DNS"
        raise TlsConfigError(
            f"the certificate {label} names its host only in the subject (CN={common}), "
            "which TLS clients ignore: workers can verify a name only in the certificate's "
            f"subjectAltName. Re-issue it with one, e.g. openssl req ... "
            f'-addext "subjectAltName={kind}:{expected}"'
        ) from None
    dns, ips = _names(cert)
    try:
        address = ipaddress.ip_address(expected)
    except ValueError:
        wanted = expected.lower().rstrip(".")
        if any(_dns_match(name.lower().rstrip("."), wanted) for name in dns):
            return
    else:
        if address.is_unspecified or address in ips:
            return
    shown = ", ".join([*dns, *map(str, ips)]) or "no name"
    raise TlsConfigError(
        f"the certificate {label} is for {shown}, but workers check it against "
        f"{expected!r}: use a certificate for that name, or pass server_name= with one "
        "of its names that leads workers to this controller"
    )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _dns_match(pattern: str, name: str) -> bool:
    if pattern == name:
        return True
    # a wildcard stands for exactly one leftmost label, as in RFC 6125
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:]
    return False


def _sealed(key: PrivateKeyTypes) -> tuple[bytes, bytes]:
    """The key as PEM encrypted under a fresh one-time password, and that password."""
    from cryptography.hazmat.primitives import serialization

    password = secrets.token_bytes(32)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    return pem, password


def _server_context(chain_pem: str, key_pem: bytes, password: bytes) -> ssl.SSLContext:
    """A server context from a chain and a sealed key (see ``_sealed``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads only files. Certificates are public; the key goes
    # to disk only encrypted under a one-time password.
    with tempfile.TemporaryDirectory(prefix="pycrew-tls-") as folder:
        os.chmod(folder, 0o700)
        cert_path = Path(folder, "chain.pem")
        cert_path.write_text(chain_pem)
        key_path = Path(folder, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        try:
            ctx.load_cert_chain(cert_path, key_path, password=password)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsConfigError(f"could not load the TLS key and certificates: {exc}") from None
    return ctx


def _automatic_credentials(host: str) -> tuple[str, PrivateKeyTypes, str]:
    """A one-time CA and a server certificate for ``host``.

    Returns the chain (PEM), the server key, and the CA certificate (PEM). The
    CA's key is dropped at once, so nothing can ever be signed by it again:
    trust ends with this controller.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    # the dates only bound a certificate whose key lives in this process alone
    lifetime = datetime.timedelta(days=3650)
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
    return chain_pem, key, ca_pem


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
    raise ArgumentTypeError(
        f"tls must be None, a mode name or a pycrew.TLS, not {type(tls).__name__}"
    )
