"""What of a worker's environment is secret, for engines that keep secrets in a platform's store.

The cloud engines pass plain variables in the job or pod spec, where anyone
who may read the spec sees them, and the rest through the platform's secret
store. The rule fails safe: a ``PYCREW_*`` variable is secret unless it is
known not to be, so a secret pycrew adds later never lands in a spec.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .._resources import MEMORY_ENV
from .._wire import _frames

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

#: pycrew's variables that say nothing secret
PUBLIC_ENV = frozenset(
    {
        _frames.PATH_ENV,
        _frames.TRUST_ENV,
        _frames.TLS_NAME_ENV,
        _frames.CONTROLLER_ENV,
        _frames.WORKER_ENV,
        _frames.JOB_END_ENV,
        MEMORY_ENV,
    }
)
#: a user's variable whose name says it is secret is kept as one
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|_KEY$|^KEY$", re.I)


def split_env(
    env: Mapping[str, str], secret_env: Collection[str] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """``env`` as (plain, secret); ``secret_env`` names more of the user's to keep secret."""
    plain, hidden = {}, {}
    for key, value in env.items():
        public = key in PUBLIC_ENV or not key.startswith("PYCREW_")
        if public and key not in secret_env and not SECRET_NAME.search(key):
            plain[key] = value
        else:
            hidden[key] = value
    return plain, hidden
