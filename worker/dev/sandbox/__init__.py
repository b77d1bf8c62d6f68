"""Fake SMS providers speaking the documented APIs, strictly.

`worker.dev.sandbox.app` holds the app factory, the knobs, fault injection and the
inspection endpoints under `/_sandbox/`; each provider API lives in its own
module (`sendbulk`, `gosms`, `uspeedo`, `voipcomm`), listed in `app.SANDBOXES`.
"""

from __future__ import annotations
