"""Provider kinds -> adapter classes: the one list of the kinds there are.

Adding a provider is its adapter module, listed here, and its sandbox module
(docs/ADDING-A-PROVIDER.md); everything else is derived from the two.
"""

from __future__ import annotations

from producer.accounts import KindInfo
from worker.providers.base import Adapter
from worker.providers.gosms import GosmsAdapter
from worker.providers.sendbulk import SendbulkAdapter
from worker.providers.uspeedo import UspeedoAdapter
from worker.providers.voipcomm import VoipcommAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    adapter.kind: adapter
    for adapter in (SendbulkAdapter, GosmsAdapter, UspeedoAdapter, VoipcommAdapter)
}


def kind_infos() -> dict[str, KindInfo]:
    """Each kind's facts for producers (published with the accounts)."""
    return {kind: adapter.kind_info() for kind, adapter in ADAPTERS.items()}


def adapter_class(kind: str) -> type[Adapter]:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise KeyError(f"unknown provider kind {kind!r} (known: {', '.join(ADAPTERS)})") from None
