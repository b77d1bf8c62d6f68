"""Where a job's ``callback_url`` may send smsbulk: the rules of docs/INTERFACE.md
"Input limits", checked at submission (the URL, and its host when it is an
address) and by the workers when they send (every address the host resolves
to; ``worker.ops.callbacks`` connects only to those).

https only, to a public address. ``[settings] callback_allow_http = true``
allows http to a loopback address (and https to one); ``callback_allow_private
= true`` allows loopback, private and link-local addresses. The checks are
pure functions; ``load_policy`` reads the settings of ``SMSBULK_CONFIG``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from producer.accounts import read_config_file
from producer.errors import ConfigError, SmsbulkError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SETTINGS_KEYS = ("callback_allow_private", "callback_allow_http")


class DestinationRefused(SmsbulkError, ValueError):
    """A callback destination that the rules refuse; the message says why."""


@dataclass(frozen=True)
class CallbackPolicy:
    allow_private: bool = False
    allow_http: bool = False

    def check_url(self, url: str) -> None:
        """Raises DestinationRefused unless ``url`` may be used: its scheme,
        and its host when that is an address (a name is checked when sent)."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise DestinationRefused("must be an https URL") from None
        if parts.scheme not in ("https", "http") or not host:
            raise DestinationRefused("must be an https URL")
        address = _literal(host)
        if parts.scheme == "http":
            if not self.allow_http:
                raise DestinationRefused(
                    "must be https (http to a loopback address needs "
                    "[settings] callback_allow_http = true)"
                )
            if address is None or not address.is_loopback:
                raise DestinationRefused("http only to a loopback address (an IP address)")
        if address is not None:
            self.check_address(address)
        elif host == "localhost" or host.endswith(".localhost"):
            self.check_address(ipaddress.ip_address("127.0.0.1"))

    def check_address(self, address: IPAddress | str) -> None:
        """Raises DestinationRefused unless a callback may connect to ``address``."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if ip.is_loopback:
            if not (self.allow_private or self.allow_http):
                raise DestinationRefused(
                    "a loopback address (allowed by [settings] callback_allow_private "
                    "or callback_allow_http)"
                )
        elif (not ip.is_global or ip.is_multicast) and not self.allow_private:
            raise DestinationRefused(
                "a private, link-local or reserved address "
                "(allowed by [settings] callback_allow_private)"
            )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: the zone aside
    except ValueError:
        pass
    try:  # 127.1, 2130706433, 0x7f.1: what the resolver would read as an IPv4 address
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def policy_from_settings(settings: Any) -> CallbackPolicy:
    """The policy of a ``[settings]`` table (a dict); raises ConfigError
    naming a key that is not true or false."""
    if not isinstance(settings, dict):
        raise ConfigError("settings: must be a table")
    values = {}
    for key in SETTINGS_KEYS:
        value = settings.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"settings.{key}: must be true or false")
        values[key] = value
    return CallbackPolicy(values["callback_allow_private"], values["callback_allow_http"])


def load_policy(config_path: str | None = None) -> CallbackPolicy:
    """The policy of the config file's ``[settings]``; without a file (a
    producer reading accounts from Redis), the strict default."""
    path = config_path or os.environ.get("SMSBULK_CONFIG")
    if not path:
        return CallbackPolicy()
    return policy_from_settings(read_config_file(path).get("settings", {}))
