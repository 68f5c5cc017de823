"""A keyring backend kept in one JSON file, for running the security guide without a keychain.

Selected with ``PYTHON_KEYRING_BACKEND=tests.helpers.guide_keyring.FileKeyring``; the
file is named by ``PYCREW_GUIDE_KEYRING`` and written with mode 0600. It
stores passwords in clear text and exists only for the tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

FILE_ENV = "PYCREW_GUIDE_KEYRING"


class FileKeyring(KeyringBackend):
    """Passwords as ``{service: {username: password}}`` in the file ``$PYCREW_GUIDE_KEYRING``."""

    priority = 1

    @staticmethod
    def _path() -> Path:
        name = os.environ.get(FILE_ENV)
        if not name:
            raise RuntimeError(f"set {FILE_ENV} to the keyring file")
        return Path(name)

    def _load(self) -> dict[str, dict[str, str]]:
        path = self._path()
        if not path.exists():
            return {}
        data: dict[str, dict[str, str]] = json.loads(path.read_text())
        return data

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        path = self._path()
        fresh = path.with_name(path.name + ".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(fresh, path)

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data.setdefault(service, {})[username] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if username not in data.get(service, {}):
            raise PasswordDeleteError(f"no password for {username!r} in {service!r}")
        del data[service][username]
        self._save(data)
