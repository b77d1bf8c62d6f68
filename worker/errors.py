"""smsbulk's exceptions: one root, provider errors carry their context."""

from __future__ import annotations


class SmsbulkError(Exception):
    """Root of every smsbulk exception."""


class ProviderError(SmsbulkError):
    """A provider answered in a way we could not use.

    Shows provider, chunk and a redacted excerpt of the response; the excerpt
    is masked here, inside the exception, so that wherever it is logged it
    carries no credential and no phone number.
    """

    def __init__(
        self, message: str, *, provider: str, chunk: str | None = None, response: str = ""
    ) -> None:
        from worker.logs import mask_text

        self.provider = provider
        self.chunk = chunk
        self.response = mask_text(response[:500])
        where = f"provider {provider}" + (f", chunk {chunk}" if chunk else "")
        detail = f": {self.response}" if self.response else ""
        super().__init__(f"{message} ({where}){detail}")
