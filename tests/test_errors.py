"""One root exception: every exception class smsbulk defines (the fake
providers' own refusals aside) is an ``SmsbulkError``, so an application
can catch all of smsbulk's errors, and only those, with one clause."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import producer
import worker
from producer import SmsbulkError


def own_exception_classes() -> list[type[BaseException]]:
    found = []
    for package in (producer, worker):
        for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module_info.name.startswith("worker.dev.sandbox"):
                continue  # the fake providers' refusals never leave the sandbox
            module = importlib.import_module(module_info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    found.append(cls)
    return found


def test_every_exception_smsbulk_defines_has_one_root() -> None:
    classes = own_exception_classes()
    assert len(classes) >= 16  # the walk found them (ConfigError, JobRefused, ...)
    assert [c.__qualname__ for c in classes if not issubclass(c, SmsbulkError)] == []


def test_errors_that_were_value_errors_still_are() -> None:
    from producer import InvalidRetry, JobRefused

    assert issubclass(JobRefused, ValueError) and issubclass(InvalidRetry, ValueError)
