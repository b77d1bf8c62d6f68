"""One provider request on the wire: its body, and its answer read within bounds.

Two things aiohttp does not say. Whether any byte of a request was written:
a request that failed before that never reached the provider ("could not
connect", retried under either policy), while one that failed after may
have been taken. And whether a kept-alive connection was closed by the
provider while idle: a worker's event loop runs only during a task, so the
provider's FIN can wait unread until our request has been written onto a
dead connection. `RequestBody` answers both, at the moment of its first
write, with nothing awaited in between.
"""

from __future__ import annotations

import json
import select
import weakref
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp.abc import AbstractStreamWriter

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a provider's answer is read up to this
_READ_CHUNK_BYTES = 64 * 1024

# Connections that have carried a request: only those can have been closed
# by the provider while idle in the pool.
_USED_CONNECTIONS: weakref.WeakSet[object] = weakref.WeakSet()


def _closed_by_peer(transport: Any) -> bool:
    """Whether the provider spoke on an idle connection before our request:
    its close (FIN or RST, or a last word such as a 408) waits unread, since a
    worker's loop runs only during a task. HTTP/1.1 servers never speak first."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class RequestBody(aiohttp.BytesPayload):
    """A request's body that knows whether any byte of the request was written.

    aiohttp writes the headers with the body's first write (3.12+), so until
    `write_with_length` hands bytes to the transport nothing of the request
    has left: a failure before that is "could not connect", whatever
    exception aiohttp raises for it (a reused connection closed by the
    provider surfaces as ``ServerDisconnectedError``, as a lost answer does).
    Older aiohttp writes the headers first: a request cut off before its body
    then had only headers written, which no server acts on.
    """

    def __init__(self, json_body: Any, form: dict[str, str] | None = None) -> None:
        if form is not None:
            data, content_type = urlencode(form).encode(), "application/x-www-form-urlencoded"
        else:
            data, content_type = json.dumps(json_body).encode(), "application/json"
        super().__init__(data, content_type=content_type)
        self.handed_over = False  # bytes of the request may have left
        self.closed_connection = False  # refused: the provider had closed the connection

    def _hand_over(self, writer: AbstractStreamWriter) -> None:
        if self.handed_over:
            return
        protocol = getattr(writer, "protocol", None)
        transport = getattr(writer, "transport", None)
        if writer.output_size == 0 and (  # nothing of this request written yet
            transport is None
            or transport.is_closing()
            or (protocol in _USED_CONNECTIONS and _closed_by_peer(transport))
        ):
            self.closed_connection = True
            raise aiohttp.ClientConnectionResetError("closed by the provider before our request")
        # No await from here to the transport's write: nothing can come between.
        self.handed_over = True
        if protocol is not None:
            _USED_CONNECTIONS.add(protocol)

    async def write(self, writer: AbstractStreamWriter) -> None:
        self._hand_over(writer)
        await super().write(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._hand_over(writer)
        await super().write_with_length(writer, content_length)


async def read_answer(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None past `MAX_ANSWER_BYTES` (read no further)."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        return None
    body = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            return None
    return bytes(body)
