"""Provider kinds -> adapter classes. Adding a provider is one line here."""

from __future__ import annotations

from worker.providers.base import Adapter
from worker.providers.gosms import GosmsAdapter
from worker.providers.sendbulk import SendbulkAdapter
from worker.providers.uspeedo import UspeedoAdapter
from worker.providers.voipcomm import VoipcommAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    adapter.kind: adapter
    for adapter in (SendbulkAdapter, GosmsAdapter, UspeedoAdapter, VoipcommAdapter)
}


def adapter_class(kind: str) -> type[Adapter]:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise KeyError(f"unknown provider kind {kind!r} (known: {', '.join(ADAPTERS)})") from None
