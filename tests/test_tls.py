"""TLS: automatic and custom certificates end to end, rogue plain clients, validation."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import time
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import pycrew
import pycrew._dispatcher
from pycrew import _wire
from pycrew._wire import PREAUTH_MAX, Kind
from tests import tasks
from tests.conftest import address, read_until_closed, wait_until

if TYPE_CHECKING:
    from pathlib import Path

PASSWORD = "k3y-Pa55-w0rd"


# ------------------------------------------------------------------ helpers


def _write_chain(
    folder: Path,
    *,
    ips: tuple[str, ...] = ("127.0.0.1",),
    dns: tuple[str, ...] = ("localhost",),
    password: str | None = PASSWORD,
) -> tuple[Path, Path, Path]:
    """A CA and a server certificate signed by it, as PEM files: (key, cert, ca)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pycrew test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pycrew test server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password is not None
        else serialization.NoEncryption()
    )
    key_path = folder / "server.key"
    cert_path = folder / "server.pem"
    ca_path = folder / "ca.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, ca_path


def _runs_tasks(ctl: pycrew.Controller) -> None:
    assert ctl.url.startswith("tls+tcp://127.0.0.1:")
    results = ctl.map(tasks.add, iterate={"x": [1, 2, 3, 4], "y": [10, 20, 30, 40]})
    assert [r.result for r in results] == [11, 22, 33, 44]
    assert all(r.status is pycrew.Status.SUCCESS for r in results)


# ---------------------------------------------------------------- automatic
def test_automatic_tls_runs_tasks_and_workers_drop_the_trust_anchor() -> None:
    with pycrew.local_controller(workers=2, tls="automatic", seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)
        assert "tls='automatic'" in repr(ctl)
        trust = ctl._env[_wire.TRUST_ENV]
        assert trust.startswith("-----BEGIN CERTIFICATE-----")
        assert "PRIVATE KEY" not in "".join(ctl._env.values())
        assert ctl.push(tasks.env, _wire.TRUST_ENV).result(timeout=30).result is None


def test_automatic_tls_port_speaks_only_tls() -> None:
    with pycrew.local_controller(workers=1, tls="automatic", seconds_interval=0.05) as ctl:
        ctl.start()
        trust = ctl._env[_wire.TRUST_ENV]
        where = address(ctl)
        # a client that trusts the one-time CA sees the pycrew HELLO inside TLS
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(cadata=trust)
        with (
            socket.create_connection(where, timeout=5) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            decoder = _wire.Decoder(PREAUTH_MAX, allow_buffers=False)
            while not decoder.frames:
                chunk = tls.recv(4096)
                assert chunk
                decoder.feed(chunk)
            assert decoder.frames[0][0] == Kind.HELLO
        # the one-time CA is not trusted by anyone else
        stranger = ssl.create_default_context()
        with (
            socket.create_connection(where, timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            stranger.wrap_socket(raw, server_hostname="127.0.0.1")


ROGUE_PLAIN = {
    "http": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "pycrew-auth-in-clear": b"".join(
        bytes(p) for p in _wire.encode(Kind.AUTH, _wire.json_meta(_wire.hello_fields()))
    ),
    "zeros": b"\0" * 512,
}


@pytest.mark.parametrize("sends", sorted(ROGUE_PLAIN))
def test_plain_tcp_rogue_is_dropped_while_workers_keep_working(sends: str) -> None:
    with pycrew.local_controller(workers=1, tls="automatic", seconds_interval=0.05) as ctl:
        before = ctl.push(tasks.pid).result(timeout=30)
        assert before.status is pycrew.Status.SUCCESS
        running = ctl.push(tasks.sleep, 0.3)
        with socket.create_connection(address(ctl), timeout=5) as sock:
            sock.sendall(ROGUE_PLAIN[sends])
            started = time.monotonic()
            reply = read_until_closed(sock)
            assert time.monotonic() - started < pycrew._dispatcher.HANDSHAKE_SECONDS / 2
        # no pycrew message ever travels in the clear
        assert b"nonce" not in reply
        assert b"pycrew" not in reply
        assert running.result(timeout=30).status is pycrew.Status.SUCCESS
        after = ctl.push(tasks.add, 2, 3).result(timeout=30)
        assert after.result == 5
        assert after.pid == before.result
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"]) == (1, 1)


def test_silent_plain_client_is_dropped_at_the_tls_handshake_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pycrew._dispatcher, "HANDSHAKE_SECONDS", 0.5)
    with pycrew.local_controller(workers=1, tls="automatic", seconds_interval=0.05) as ctl:
        ctl.start()
        with socket.create_connection(address(ctl), timeout=5) as sock:
            started = time.monotonic()
            assert read_until_closed(sock, seconds=5) == b""
            elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 5
        assert ctl.push(tasks.add, 1, 1).result(timeout=30).result == 2


# --------------------------------------------------------------- validation
def test_bad_mode_raises() -> None:
    with pytest.raises(pycrew.TlsConfigError, match="mode"):
        pycrew.TLS("bogus")  # type: ignore[arg-type]
    with pytest.raises(pycrew.TlsConfigError):
        pycrew.local_controller(tls="bogus")
    with pytest.raises(TypeError):
        pycrew.local_controller(tls=5)  # type: ignore[arg-type]


def test_custom_mode_needs_a_tls_object() -> None:
    with pytest.raises(pycrew.TlsConfigError, match="custom"):
        pycrew.local_controller(tls="custom")


@pytest.mark.parametrize("mode", ["none", "automatic"])
@pytest.mark.parametrize("field", ["key", "password", "password_env", "certificates"])
def test_custom_fields_outside_custom_mode_raise(mode: str, field: str) -> None:
    values: dict[str, object] = {
        "key": "server.key",
        "password": lambda: "pw",
        "password_env": "PW",
        "certificates": ["server.pem"],
    }
    with pytest.raises(pycrew.TlsConfigError, match="only to mode 'custom'"):
        pycrew.TLS(mode, **{field: values[field]})  # type: ignore[arg-type]


def test_custom_with_missing_or_wrong_files_raises(tmp_path: Path) -> None:
    key, cert, ca = _write_chain(tmp_path)
    with pytest.raises(pycrew.TlsConfigError, match="needs key"):
        pycrew.TLS("custom", certificates=[cert, ca])
    with pytest.raises(pycrew.TlsConfigError, match="needs key"):
        pycrew.TLS("custom", key=key)
    with pytest.raises(pycrew.TlsConfigError, match="not found"):
        pycrew.TLS("custom", key=tmp_path / "missing.key", certificates=[cert, ca])
    with pytest.raises(pycrew.TlsConfigError, match="not found"):
        pycrew.TLS("custom", key=key, certificates=[cert, tmp_path / "missing.pem"])
    with pytest.raises(pycrew.TlsConfigError, match="no PEM private key"):
        pycrew.TLS("custom", key=cert, certificates=[cert, ca])
    with pytest.raises(pycrew.TlsConfigError, match="no PEM certificate"):
        pycrew.TLS("custom", key=key, certificates=[key])
    with pytest.raises(pycrew.TlsConfigError, match="not both"):
        pycrew.TLS(
            "custom",
            key=key,
            certificates=[cert, ca],
            password=lambda: PASSWORD,
            password_env="PW",
        )


def test_custom_repr_hides_the_password(tmp_path: Path) -> None:
    key, cert, ca = _write_chain(tmp_path)
    tls = pycrew.TLS("custom", key=key, certificates=[cert, ca], password=lambda: PASSWORD)
    assert PASSWORD not in repr(tls)
    assert str(key) in repr(tls)
    assert tls.enabled


# ------------------------------------------------------------ custom chains
def test_custom_tls_with_password_callable_runs_tasks(tmp_path: Path) -> None:
    key, cert, ca = _write_chain(tmp_path)
    tls = pycrew.TLS("custom", key=key, certificates=[cert, ca], password=lambda: PASSWORD)
    with pycrew.local_controller(workers=2, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)
        # workers receive the root certificate only: no key, no password
        assert ctl._env[_wire.TRUST_ENV] == ca.read_text()
        shipped = "".join(ctl._env.values())
        assert "PRIVATE KEY" not in shipped
        assert PASSWORD not in shipped
        assert PASSWORD not in repr(ctl)


def test_custom_tls_with_password_env_runs_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert, ca = _write_chain(tmp_path)
    monkeypatch.setenv("PYCREW_TEST_KEY_PASSWORD", PASSWORD)
    tls = pycrew.TLS(
        "custom", key=key, certificates=[cert, ca], password_env="PYCREW_TEST_KEY_PASSWORD"
    )
    with pycrew.local_controller(workers=1, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)


def test_custom_tls_with_unencrypted_key_runs_tasks(tmp_path: Path) -> None:
    key, cert, ca = _write_chain(tmp_path, password=None)
    tls = pycrew.TLS("custom", key=key, certificates=[cert, ca])
    with pycrew.local_controller(workers=1, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)


def test_custom_tls_wrong_password_fails_at_start(tmp_path: Path) -> None:
    key, cert, ca = _write_chain(tmp_path)
    tls = pycrew.TLS("custom", key=key, certificates=[cert, ca], password=lambda: "wrong")
    ctl = pycrew.local_controller(tls=tls)
    try:
        with pytest.raises(pycrew.TlsConfigError, match="could not load"):
            ctl.start()
        assert not ctl.started()
    finally:
        ctl.terminate()


def test_custom_tls_unset_password_env_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert, ca = _write_chain(tmp_path)
    monkeypatch.delenv("PYCREW_TEST_UNSET_PASSWORD", raising=False)
    tls = pycrew.TLS(
        "custom", key=key, certificates=[cert, ca], password_env="PYCREW_TEST_UNSET_PASSWORD"
    )
    ctl = pycrew.local_controller(tls=tls)
    try:
        with pytest.raises(pycrew.TlsConfigError, match="PYCREW_TEST_UNSET_PASSWORD"):
            ctl.start()
        assert not ctl.started()
    finally:
        ctl.terminate()


def test_certificate_for_another_host_keeps_workers_out(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    logs = tmp_path / "logs"
    key, cert, ca = _write_chain(certs, ips=("10.11.12.13",), dns=("example.invalid",))
    tls = pycrew.TLS("custom", key=key, certificates=[cert, ca], password=lambda: PASSWORD)
    with pycrew.local_controller(
        workers=1, tls=tls, seconds_interval=0.05, seconds_launch=3, log_directory=logs
    ) as ctl:
        ctl.launch(1)
        wait_until(lambda: ctl.workers_status()["failed"] >= 1, 10, "a failed launch")
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"], status["launching"]) == (0, 0, 0)
        assert ctl.pids() == []
    text = "".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    assert "could not join the controller" in text
    assert "certificate verify failed" in text.lower()
