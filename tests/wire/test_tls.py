"""TLS: automatic and custom certificates end to end, rogue plain clients, validation."""

from __future__ import annotations

import logging
import pickle
import secrets
import socket
import ssl
import time
from pathlib import Path

import psutil
import pytest

import pycrew
import pycrew._dispatcher._handshake
from pycrew._wire import _frames
from pycrew._wire._frames import PREAUTH_MAX, Kind
from tests.helpers import pki, tasks
from tests.helpers.common import address, read_until_closed, wait_until

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
    ca = pki.issue("pycrew test CA", ca=True)
    server = pki.issue("pycrew test server", ca, ips=ips, dns=dns)
    key = pki.write_key(folder / "server.key", server.key, password)
    cert = pki.write_certs(folder / "server.pem", server)
    return key, cert, pki.write_certs(folder / "ca.pem", ca)


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
        trust = ctl._env[_frames.TRUST_ENV]
        assert trust.startswith("-----BEGIN CERTIFICATE-----")
        assert "PRIVATE KEY" not in "".join(ctl._env.values())
        assert ctl.push(tasks.env, _frames.TRUST_ENV).record(timeout=30).result is None


def test_automatic_tls_port_speaks_only_tls() -> None:
    with pycrew.local_controller(workers=1, tls="automatic", seconds_interval=0.05) as ctl:
        ctl.start()
        trust = ctl._env[_frames.TRUST_ENV]
        where = address(ctl)
        # a client that trusts the one-time CA sees the pycrew HELLO inside TLS
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(cadata=trust)
        with (
            socket.create_connection(where, timeout=5) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            decoder = _frames.Decoder(PREAUTH_MAX, allow_buffers=False)
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
        bytes(p) for p in _frames.encode(Kind.AUTH, _frames.json_meta(_frames.hello_fields()))
    ),
    "zeros": b"\0" * 512,
}


@pytest.mark.parametrize("sends", sorted(ROGUE_PLAIN))
def test_plain_tcp_rogue_is_dropped_while_workers_keep_working(sends: str) -> None:
    with pycrew.local_controller(workers=1, tls="automatic", seconds_interval=0.05) as ctl:
        before = ctl.push(tasks.pid).record(timeout=30)
        assert before.status is pycrew.Status.SUCCESS
        running = ctl.push(tasks.sleep, 0.3)
        with socket.create_connection(address(ctl), timeout=5) as sock:
            sock.sendall(ROGUE_PLAIN[sends])
            started = time.monotonic()
            reply = read_until_closed(sock)
            assert time.monotonic() - started < pycrew._dispatcher._handshake.HANDSHAKE_SECONDS / 2
        # no pycrew message ever travels in the clear
        assert b"nonce" not in reply
        assert b"pycrew" not in reply
        assert running.record(timeout=30).status is pycrew.Status.SUCCESS
        after = ctl.push(tasks.add, 2, 3).record(timeout=30)
        assert after.result == 5
        assert after.pid == before.result
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"]) == (1, 1)


def test_silent_plain_client_is_dropped_at_the_tls_handshake_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pycrew._dispatcher._handshake, "HANDSHAKE_SECONDS", 0.5)
    with pycrew.local_controller(workers=1, tls="automatic", seconds_interval=0.05) as ctl:
        ctl.start()
        with socket.create_connection(address(ctl), timeout=5) as sock:
            started = time.monotonic()
            assert read_until_closed(sock, seconds=5) == b""
            elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 5
        assert ctl.push(tasks.add, 1, 1).record(timeout=30).result == 2


# --------------------------------------------------------------- validation
def test_bad_mode_raises() -> None:
    with pytest.raises(pycrew.TlsConfigError, match=r"mode"):
        pycrew.TLS("bogus")  # type: ignore[arg-type]


def test_custom_mode_needs_a_tls_object() -> None:
    with pytest.raises(pycrew.TlsConfigError, match=r"pycrew.TLS"):
        pycrew.local_controller(tls="custom")
    with pytest.raises(TypeError):
        pycrew.local_controller(tls=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["none", "automatic"])
@pytest.mark.parametrize(
    "field", ["key", "certificates", "password", "password_env", "server_name"]
)
def test_custom_fields_outside_custom_mode_raise(mode: str, field: str) -> None:
    value: object = ["x.pem"] if field == "certificates" else "x"
    with pytest.raises(pycrew.TlsConfigError, match=r"only to mode 'custom'"):
        pycrew.TLS(mode, **{field: value})  # type: ignore[arg-type]


def _three_level_files(
    folder: Path, password: str | None = PASSWORD, **server: object
) -> tuple[Path, list[Path], pki.Issued]:
    """Key and [server, intermediate, root] files of a fresh three-level chain."""
    leaf, intermediate, root = pki.three_levels(**server)
    key = pki.write_key(folder / "server.key", leaf.key, password)
    certs = [
        pki.write_certs(folder / "server.pem", leaf),
        pki.write_certs(folder / "intermediate.pem", intermediate),
        pki.write_certs(folder / "root.pem", root),
    ]
    return key, certs, root


def test_custom_with_missing_or_wrong_files_raises(tmp_path: Path) -> None:
    key, cert, ca = _write_chain(tmp_path)
    with pytest.raises(pycrew.TlsConfigError, match=r"needs key"):
        pycrew.TLS("custom", certificates=[cert, ca])
    with pytest.raises(pycrew.TlsConfigError, match=r"needs key"):
        pycrew.TLS("custom", key=key)
    with pytest.raises(pycrew.TlsConfigError, match=r"not found: .*missing.key"):
        pycrew.TLS("custom", key=tmp_path / "missing.key", certificates=[cert, ca])
    with pytest.raises(pycrew.TlsConfigError, match=r"not found: .*missing.pem"):
        pycrew.TLS("custom", key=key, certificates=[cert, tmp_path / "missing.pem"])
    cert.chmod(0o600)
    with pytest.raises(pycrew.TlsConfigError, match=r"server.pem holds no PEM private key"):
        pycrew.TLS("custom", key=cert, certificates=[cert, ca])
    with pytest.raises(pycrew.TlsConfigError, match=r"server.key holds no PEM certificate"):
        pycrew.TLS("custom", key=key, certificates=[key], password=lambda: PASSWORD)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(pycrew.TlsConfigError, match=r"could not parse the certificate in .*broken"):
        pycrew.TLS("custom", key=key, certificates=[cert, broken], password=lambda: PASSWORD)
    with pytest.raises(pycrew.TlsConfigError, match=r"not both"):
        pycrew.TLS(
            "custom",
            key=key,
            certificates=[cert, ca],
            password=lambda: PASSWORD,
            password_env="PW",
        )
    with pytest.raises(pycrew.TlsConfigError, match=r"password must be"):
        pycrew.TLS("custom", key=key, certificates=[cert, ca], password=1234)  # type: ignore[arg-type]


# ------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    ("kind", "form", "password"),
    [
        ("ec", "pkcs8", PASSWORD),
        ("ec", "pkcs8", None),
        ("ec", "traditional", PASSWORD),  # SEC1, encrypted the old OpenSSL way
        ("ec", "traditional", None),
        ("rsa", "traditional", PASSWORD),  # PKCS#1, which crew refuses
        ("rsa", "traditional", None),
        ("rsa", "pkcs8", PASSWORD),
    ],
)
def test_every_key_form_is_accepted(
    tmp_path: Path, kind: str, form: str, password: str | None
) -> None:
    key = pki.rsa_key() if kind == "rsa" else None
    leaf, intermediate, root = pki.three_levels(key=key)
    key_path = pki.write_key(tmp_path / "server.key", leaf.key, password, form)
    marker = {"pkcs8": "BEGIN ", "traditional": "BEGIN RSA " if kind == "rsa" else "BEGIN EC "}
    assert marker[form] in key_path.read_text()
    certs = [pki.write_certs(tmp_path / "chain.pem", leaf, intermediate, root)]
    tls = pycrew.TLS(
        "custom", key=key_path, certificates=certs, password=password and (lambda: password)
    )
    session = tls.session("127.0.0.1")
    assert session is not None
    assert session.trust_pem == root.pem().decode()


def test_rsa_pkcs1_key_runs_tasks_end_to_end(tmp_path: Path) -> None:
    leaf, intermediate, root = pki.three_levels(key=pki.rsa_key())
    key = pki.write_key(tmp_path / "server.key", leaf.key, PASSWORD, "traditional")
    assert "BEGIN RSA PRIVATE KEY" in key.read_text()
    certs = [
        pki.write_certs(tmp_path / f"{i}.pem", c) for i, c in enumerate((leaf, intermediate, root))
    ]
    tls = pycrew.TLS("custom", key=key, certificates=certs, password=PASSWORD)
    with pycrew.local_controller(workers=1, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)


def test_encrypted_key_without_password_or_with_a_wrong_one_is_refused(tmp_path: Path) -> None:
    key, certs, _ = _three_level_files(tmp_path)
    with pytest.raises(pycrew.TlsConfigError, match=r"server.key is encrypted: give its password"):
        pycrew.TLS("custom", key=key, certificates=certs)
    with pytest.raises(pycrew.TlsConfigError, match=r"server.key: the password is wrong") as wrong:
        pycrew.TLS("custom", key=key, certificates=certs, password="not-the-password")
    assert "not-the-password" not in str(wrong.value)
    assert wrong.value.__suppress_context__

    def broken() -> str:
        raise RuntimeError(f"keyring locked, but the password is {PASSWORD}")

    with pytest.raises(pycrew.TlsConfigError, match=r"callable for .*failed") as failed:
        pycrew.TLS("custom", key=key, certificates=certs, password=broken)
    assert PASSWORD not in str(failed.value)
    # a password for a key that has none is harmless
    plain, plain_certs, _ = _three_level_files(_subdir(tmp_path, "plain"), None)
    assert pycrew.TLS("custom", key=plain, certificates=plain_certs, password="unused").enabled


def test_key_readable_by_others_is_refused_unless_allowed(tmp_path: Path) -> None:
    key, certs, _ = _three_level_files(tmp_path)
    for mode in (0o640, 0o604, 0o644):
        key.chmod(mode)
        with pytest.raises(pycrew.TlsConfigError, match=rf"read by other users \(mode {mode:o}\)"):
            pycrew.TLS("custom", key=key, certificates=certs, password=PASSWORD)
    tls = pycrew.TLS(
        "custom", key=key, certificates=certs, password=PASSWORD, allow_readable_key=True
    )
    assert tls.session("127.0.0.1") is not None


# --------------------------------------------------------------- passwords
def test_literal_password_is_kept_out_of_repr_pickle_and_workers(tmp_path: Path) -> None:
    key, certs, _ = _three_level_files(tmp_path)
    for password in (PASSWORD, PASSWORD.encode()):
        tls = pycrew.TLS("custom", key=key, certificates=certs, password=password)
        assert PASSWORD not in repr(tls)
        with pytest.raises(TypeError, match=r"literal key password is not pickled"):
            pickle.dumps(tls)
    with pycrew.local_controller(workers=1, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)
        spec = ctl._worker_spec()
        shipped = " ".join([*spec.command, *spec.env.values()])
        assert PASSWORD not in shipped
        assert "PRIVATE KEY" not in shipped
        assert PASSWORD not in repr(ctl)


def test_tls_with_an_env_password_pickles_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, certs, _ = _three_level_files(tmp_path)
    monkeypatch.setenv("PYCREW_TEST_KEY_PASSWORD", PASSWORD)
    tls = pycrew.TLS("custom", key=key, certificates=certs, password_env="PYCREW_TEST_KEY_PASSWORD")
    data = pickle.dumps(tls)
    assert PASSWORD.encode() not in data
    assert pickle.loads(data).session("127.0.0.1") is not None


# ------------------------------------------------------------------ chains
def test_three_level_chain_with_encrypted_key_runs_tasks(tmp_path: Path) -> None:
    key, certs, root = _three_level_files(tmp_path)
    tls = pycrew.TLS("custom", key=key, certificates=certs, password=lambda: PASSWORD)
    with pycrew.local_controller(workers=2, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)
        # workers trust exactly the root: no key, no password, no intermediate
        assert ctl._env[_frames.TRUST_ENV] == root.pem().decode()
        shipped = "".join(ctl._env.values())
        assert "PRIVATE KEY" not in shipped
        assert PASSWORD not in shipped
        assert PASSWORD not in repr(ctl)


def test_chain_in_one_file_runs_tasks(tmp_path: Path) -> None:
    leaf, intermediate, root = pki.three_levels()
    key = pki.write_key(tmp_path / "server.key", leaf.key, None)
    bundle = pki.write_certs(tmp_path / "bundle.pem", leaf, intermediate, root)
    tls = pycrew.TLS("custom", key=key, certificates=[bundle])
    with pycrew.local_controller(workers=1, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)


def test_chain_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    key, (server, intermediate, root), _ = _three_level_files(tmp_path, None)

    def make(*certs: Path) -> pycrew.TLS:
        return pycrew.TLS("custom", key=key, certificates=list(certs))

    with pytest.raises(
        pycrew.TlsConfigError,
        match=r"server.pem is not signed by the next one, .*root.pem.*missing or out of order",
    ):
        make(server, root)
    with pytest.raises(
        pycrew.TlsConfigError, match=r"server.pem is not signed by the next one, .*root.pem"
    ):
        make(server, root, intermediate)
    with pytest.raises(
        pycrew.TlsConfigError,
        match=r"the last certificate, .*intermediate.pem, is not a self-signed root",
    ):
        make(server, intermediate)
    with pytest.raises(
        pycrew.TlsConfigError,
        match=r"server.key does not belong to the first certificate, .*intermediate.pem",
    ):
        make(intermediate, server, root)
    other, _, _ = _three_level_files(_subdir(tmp_path, "other"), None)
    with pytest.raises(pycrew.TlsConfigError, match=r"does not belong to the first certificate"):
        pycrew.TLS("custom", key=other, certificates=[server, intermediate, root])


def _subdir(path: Path, name: str) -> Path:
    (path / name).mkdir()
    return path / name


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"not_before": pki.NOW - 30 * pki.DAY, "not_after": pki.NOW - pki.DAY}, "expired on"),
        (
            {"not_before": pki.NOW + pki.DAY, "not_after": pki.NOW + 30 * pki.DAY},
            "is not valid before",
        ),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_certificates_out_of_their_dates_are_refused(
    tmp_path: Path, when: dict[str, object], message: str
) -> None:
    key, certs, _ = _three_level_files(tmp_path, None, **when)
    with pytest.raises(pycrew.TlsConfigError, match=rf"server.pem {message}"):
        pycrew.TLS("custom", key=key, certificates=certs)


def test_certificate_expiring_soon_warns(tmp_path: Path) -> None:
    key, certs, _ = _three_level_files(tmp_path, None, not_after=pki.NOW + 10 * pki.DAY)
    with pytest.warns(pycrew.CrewWarning, match=r"server.pem expires on .* \((9|10) days\)"):
        tls = pycrew.TLS("custom", key=key, certificates=certs)
    assert tls.session("127.0.0.1") is not None  # no second warning at each start


# ------------------------------------------------------------------- names
def test_certificate_for_another_host_is_refused_at_start(tmp_path: Path) -> None:
    key, certs, _ = _three_level_files(tmp_path, ips=("10.11.12.13",), dns=("example.invalid",))
    tls = pycrew.TLS("custom", key=key, certificates=certs, password=PASSWORD)
    ctl = pycrew.local_controller(tls=tls)
    try:
        with pytest.raises(
            pycrew.TlsConfigError,
            match=r"server.pem is for example.invalid, 10.11.12.13, "
            r"but workers check it against '127.0.0.1'.*server_name=",
        ):
            ctl.start()
        assert not ctl.started()
    finally:
        ctl.terminate()


def test_server_name_lets_workers_check_a_name_other_than_the_host(tmp_path: Path) -> None:
    key, certs, _ = _three_level_files(tmp_path, ips=(), dns=("*.pycrew.test",))
    tls = pycrew.TLS(
        "custom", key=key, certificates=certs, password=PASSWORD, server_name="ctl.pycrew.test"
    )
    assert "server_name='ctl.pycrew.test'" in repr(tls)
    with pycrew.local_controller(workers=1, tls=tls, seconds_interval=0.05) as ctl:
        _runs_tasks(ctl)
        assert ctl._env[_frames.TLS_NAME_ENV] == "ctl.pycrew.test"
    wrong = pycrew.TLS(
        "custom", key=key, certificates=certs, password=PASSWORD, server_name="a.b.pycrew.test"
    )
    with pytest.raises(pycrew.TlsConfigError, match=r"against 'a.b.pycrew.test'"):
        wrong.session("127.0.0.1")


def test_workers_refuse_a_certificate_for_another_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if the start-up check had missed it: the workers' own check still holds
    monkeypatch.setattr(pycrew._wire._tls, "_check_name", lambda *args: None)
    certs_dir = _subdir(tmp_path, "certs")
    logs = tmp_path / "logs"
    key, certs, _ = _three_level_files(certs_dir, ips=("10.11.12.13",), dns=("example.invalid",))
    tls = pycrew.TLS("custom", key=key, certificates=certs, password=lambda: PASSWORD)
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
    assert "ip address mismatch" in text.lower() or "hostname mismatch" in text.lower()


# --------------------------------------------------------------- passwords
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


def test_password_env_is_read_when_made_and_at_each_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert, ca = _write_chain(tmp_path)
    monkeypatch.delenv("PYCREW_TEST_UNSET_PASSWORD", raising=False)
    with pytest.raises(pycrew.TlsConfigError, match=r"PYCREW_TEST_UNSET_PASSWORD .* is not set"):
        pycrew.TLS(
            "custom", key=key, certificates=[cert, ca], password_env="PYCREW_TEST_UNSET_PASSWORD"
        )
    monkeypatch.setenv("PYCREW_TEST_UNSET_PASSWORD", PASSWORD)
    tls = pycrew.TLS(
        "custom", key=key, certificates=[cert, ca], password_env="PYCREW_TEST_UNSET_PASSWORD"
    )
    monkeypatch.setenv("PYCREW_TEST_UNSET_PASSWORD", "changed")
    ctl = pycrew.local_controller(tls=tls)
    try:
        with pytest.raises(pycrew.TlsConfigError, match=r"the password is wrong"):
            ctl.start()
        assert not ctl.started()
    finally:
        ctl.terminate()


def test_automatic_key_never_rests_on_disk_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[bytes] = []
    real = pycrew._wire._tls._server_context

    def spy(
        chain_pem: str, key_pem: bytes | None, *args: object, **kwargs: object
    ) -> ssl.SSLContext:
        if key_pem is not None:
            written.append(key_pem)
        return real(chain_pem, key_pem, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pycrew._wire._tls, "_server_context", spy)
    session = pycrew.TLS("automatic").session("127.0.0.1")
    assert session is not None
    assert len(written) == 1
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in written[0]


def test_key_password_is_nowhere_to_be_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in argv, worker environments, logs, reprs, records, or worker specs."""
    password = "pw-" + secrets.token_hex(12)
    key, certs, _ = _three_level_files(_subdir(tmp_path, "certs"), password)
    logs = tmp_path / "logs"
    monkeypatch.setenv("PYCREW_TEST_KEY_PASSWORD", password)
    caplog.set_level(logging.DEBUG, logger="pycrew")
    tls = pycrew.TLS("custom", key=key, certificates=certs, password_env="PYCREW_TEST_KEY_PASSWORD")
    with pycrew.local_controller(
        workers=2, tls=tls, seconds_interval=0.05, log_directory=logs
    ) as ctl:
        _runs_tasks(ctl)
        failed = ctl.push(tasks.fail, "boom").record(timeout=30)
        assert failed.status is pycrew.Status.ERROR
        # the variable holding the password does not reach workers at all
        assert ctl.push(tasks.env, "PYCREW_TEST_KEY_PASSWORD").record(timeout=30).result is None
        with socket.create_connection(address(ctl), timeout=5) as sock:  # a failed handshake
            sock.sendall(b"\x16\x03\x01\x00\x05hello")
            read_until_closed(sock)
        pids = ctl.pids()
        assert pids
        for pid in pids:
            proc = psutil.Process(pid)
            assert password not in " ".join(proc.cmdline())
            assert password.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        for proc in psutil.process_iter(["cmdline"]):
            assert password not in " ".join(proc.info["cmdline"] or [])
        spec = ctl._worker_spec()
        assert password not in repr(spec) + " ".join([*spec.command, *spec.env.values()])
        shown = repr(ctl) + repr(tls) + repr(failed) + str(ctl.summary())
        assert password not in shown
    text = "".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    assert "connected to" in text
    assert password not in text
    assert password not in caplog.text
