"""Every system bench.py knows, by key, in the order a full run takes them."""

from __future__ import annotations

from adapters import BASE_ADAPTERS, Adapter
from adapters_peers import PEER_ADAPTERS

ADAPTERS: dict[str, type[Adapter]] = {a.key: a for a in (*BASE_ADAPTERS, *PEER_ADAPTERS)}
