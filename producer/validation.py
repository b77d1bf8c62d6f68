"""What refuses a job whole (docs/INTERFACE.md), checked as its messages stream in.

A job's settings are validated at once (``JobSpec``), its messages a block
of ``keys.BLOCK_SIZE`` at a time, so that a million-recipient job is never
held as a million pydantic models. ``JobCheck`` owns every per-message rule:
submission (``producer.submission``) streams through it, and
``validate_job`` (for ``estimate``) collects a whole job through the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from producer.accounts import AccountInfo, routes_of
from producer.core import keys
from producer.destinations import CallbackPolicy, DestinationRefused
from producer.job import Job, JobRefused, JobSpec, Loc, Message, error_records, refusal_from
from producer.routes import Route

MAX_ERRORS = 20  # a refusal names at most this many; validation stops there
NO_TEXT = "no text: give the message a text or the job a default"

JobInput = Job | dict[str, Any] | str | bytes
STRICT = CallbackPolicy()  # no [settings]: https to public addresses only

_MESSAGES = TypeAdapter(list[Message])
# Job.messages' own rule (a minimum length), checked for a stream of n messages
# on a list of min(n, 1): the same verdict and pydantic's own error, no copy.
_MESSAGES_LENGTH = TypeAdapter(Annotated[list[None], *Job.model_fields["messages"].metadata])
_JSON_OBJECT = TypeAdapter(dict[str, Any])


def _error(field: str, msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"field": field, "msg": msg, "type": kind}


class JobCheck:
    """The checks of one job: its settings' errors (found by ``open_job``),
    then its messages', a block at a time (``blocks``); ``accepted`` gives
    the verdict once every message has been seen."""

    def __init__(
        self,
        spec: JobSpec | None,
        account: AccountInfo | None,
        errors: list[dict[str, Any]],
        route: tuple[Route, AccountInfo] | None = None,
    ) -> None:
        self.spec = spec  # None when the settings themselves are invalid
        self.errors = errors
        self.total = 0  # messages seen so far
        # A message needs its own text when neither the job nor a template
        # gives one: on a route, when one of its accounts is a text account
        # (`route`: the route and its first such account).
        self._route = route
        self._text_required = (
            spec is not None
            and (route is not None or (account is not None and not account.is_template))
            and spec.text is None
        )

    @property
    def job_id(self) -> str | None:
        return self.spec.job_id if self.spec is not None else None

    def blocks(self, messages: Iterable[Any]) -> Iterator[list[Message]]:
        """The messages as validated blocks, in order, counted in ``total``.

        Nothing is yielded once an error is known (the job will be refused),
        but validation goes on, to name up to MAX_ERRORS errors at once.
        """
        source = iter(messages)
        while len(self.errors) < MAX_ERRORS and (raw := list(islice(source, keys.BLOCK_SIZE))):
            block = self._check_block(raw)
            if not self.errors:
                yield block

    def _check_block(self, raw: list[Any]) -> list[Message]:
        first = self.total
        self.total += len(raw)

        def in_job(loc: Loc) -> Loc:  # (3, "to") in this block -> ("messages", first + 3, "to")
            return ("messages", first + int(loc[0]), *loc[1:])

        try:
            block = _MESSAGES.validate_python(raw)
        except ValidationError as error:
            self.errors += error_records(error, in_job)
            return []
        if self._text_required:
            missing = [first + i for i, message in enumerate(block) if message.text is None]
            if missing and self._route is not None:
                route, account = self._route
                self.errors.append(
                    _error(
                        "provider",
                        f"route {route.name}: account {account.name} ({account.kind}) cannot "
                        f"send messages[{missing[0]}], which has no text (nor the job a default)",
                    )
                )
                self._route = None  # named once
            self.errors += [_error(f"messages[{i}].text", NO_TEXT) for i in missing]
        return block

    def accepted(self) -> JobSpec:
        """The job's settings, once every message has been checked; raises
        JobRefused naming at most MAX_ERRORS errors."""
        named = {error["field"] for error in self.errors}
        if "messages" not in named:
            try:
                _MESSAGES_LENGTH.validate_python([None] * min(self.total, 1))
            except ValidationError as error:
                self.errors += error_records(error, lambda loc: ("messages", *loc))
        if self.errors or self.spec is None:
            raise JobRefused(self.errors[:MAX_ERRORS])
        return self.spec


def open_job(
    job: JobInput, accounts: Mapping[str, AccountInfo], callbacks: CallbackPolicy = STRICT
) -> tuple[JobCheck, Iterable[Any]]:
    """A job's settings checked, against its account and the ``callbacks``
    policy too; its messages are returned unread, for ``JobCheck.blocks``.

    Raises JobRefused at once only if the input is not a JSON object; every
    other error is kept in the check, so one refusal names them all.
    """
    errors: list[dict[str, Any]] = []
    spec: JobSpec | None
    messages: Iterable[Any]
    if isinstance(job, Job):
        spec, messages = job, job.messages
    else:
        fields = _json_object(job)
        try:
            spec = JobSpec.model_validate({k: v for k, v in fields.items() if k != "messages"})
        except ValidationError as error:
            spec = None
            errors += error_records(error)
        messages = _message_source(fields, errors)
    account = accounts.get(spec.provider) if spec is not None else None
    route = routes_of(accounts).get(spec.provider) if spec is not None else None
    texts: tuple[Route, AccountInfo] | None = None
    if spec is not None and route is not None and account is None:
        errors += _route_errors(spec, route, accounts)
        text_account = next(
            (a for a in map(accounts.get, route.every_account()) if a and not a.is_template),
            None,
        )
        texts = (route, text_account) if text_account is not None else None
    elif spec is not None:
        errors += _account_errors(spec, account, accounts)
    if spec is not None:
        errors += _callback_errors(spec, callbacks)
    if spec is not None and spec.max_cost is not None:
        names = [spec.provider] if account else route.every_account() if route else []
        errors += _cost_errors([accounts[n] for n in names if n in accounts])
    return JobCheck(spec, account, errors, texts), messages


def _callback_errors(spec: JobSpec, callbacks: CallbackPolicy) -> list[dict[str, Any]]:
    if spec.callback_url is None:
        return []
    try:
        callbacks.check_url(spec.callback_url)
    except DestinationRefused as refused:
        return [_error("callback_url", str(refused))]
    return []


def _json_object(job: dict[str, Any] | str | bytes) -> dict[str, Any]:
    parsed: Any = job
    if isinstance(job, str | bytes):
        # The stdlib parser: of those at hand, the fastest to plain objects
        # and the leanest (a 22 MB job of a million messages takes 270 MB).
        try:
            parsed = json.loads(job)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise JobRefused([_error("", f"Invalid JSON: {error}", "json_invalid")]) from None
    if isinstance(parsed, dict):
        return parsed
    try:  # not an object: refused in pydantic's words
        return _JSON_OBJECT.validate_python(parsed)
    except ValidationError as error:
        raise refusal_from(error) from None


def _message_source(fields: dict[str, Any], errors: list[dict[str, Any]]) -> Iterable[Any]:
    """The job's messages as given: a list, or any iterable (a generator)."""
    if "messages" not in fields:
        errors.append(_error("messages", "Field required", "missing"))
        return ()
    messages = fields["messages"]
    if isinstance(messages, str | bytes | bytearray | Mapping) or not isinstance(
        messages, Iterable
    ):
        errors.append(_error("messages", "Input should be a valid list", "list_type"))
        return ()
    return messages


def _account_errors(
    spec: JobSpec, account: AccountInfo | None, accounts: Mapping[str, AccountInfo]
) -> list[dict[str, Any]]:
    if account is None:
        known = ", ".join(sorted(accounts)) or "none"
        routes = ", ".join(sorted(routes_of(accounts))) or "none"
        return [
            _error("provider", f"unknown provider (accounts: {known}; routes: {routes})", "unknown")
        ]
    errors = []
    if account.is_template and not spec.template_id:
        errors.append(_error("template_id", f"required for {account.kind} account"))
    if account.needs_sender and not (spec.sender or account.sender):
        errors.append(_error("sender", f"required for {account.kind} (in the job or the account)"))
    return errors


def _cost_errors(priced: list[AccountInfo]) -> list[dict[str, Any]]:
    """A spend cap needs the price of every account the job may use, in one currency."""
    unpriced = [a.name for a in priced if a.price_per_part is None]
    if unpriced:
        return [
            _error(
                "max_cost",
                f"account {', '.join(unpriced)} has no price_per_part: a spend cap needs the "
                "price of every account the job may use (set price_per_part and currency)",
            )
        ]
    currencies: dict[str, list[str]] = {}
    for account in priced:
        currencies.setdefault(account.currency or "no currency", []).append(account.name)
    if len(currencies) > 1:
        said = "; ".join(f"{c}: {', '.join(names)}" for c, names in sorted(currencies.items()))
        return [
            _error(
                "max_cost",
                f"the accounts the job may use price in different currencies ({said}): "
                "one cap cannot add them up",
            )
        ]
    return []


def _route_errors(
    spec: JobSpec, route: Route, accounts: Mapping[str, AccountInfo]
) -> list[dict[str, Any]]:
    """Every account of the route must be able to send the job, by the rules
    of one account; each that cannot is named, with why, under ``provider``."""
    errors = []
    for name in route.every_account():
        account = accounts.get(name)
        cannot = f"route {route.name}: account {name}"
        if account is None:
            errors.append(_error("provider", f"{cannot} is not a known account", "unknown"))
            continue
        cannot += f" ({account.kind}) cannot send this job"
        if account.is_template and not spec.template_id:
            errors.append(_error("provider", f"{cannot}: it needs a template_id"))
        if account.needs_sender and not (spec.sender or account.sender):
            errors.append(
                _error("provider", f"{cannot}: it needs a sender (in the job or the account)")
            )
    return errors


def validate_job(
    job: JobInput, accounts: Mapping[str, AccountInfo], callbacks: CallbackPolicy = STRICT
) -> Job:
    """The whole job, checked as a submission checks it; raises JobRefused.

    For ``estimate``, which needs every message at once: submission streams
    through the same ``JobCheck`` instead.
    """
    check, messages = open_job(job, accounts, callbacks)
    validated = [message for block in check.blocks(messages) for message in block]
    spec = check.accepted()
    if isinstance(job, Job):
        return job
    fields_set = spec.model_fields_set | {"messages"}
    return Job.model_construct(fields_set, **dict(spec), messages=validated)
