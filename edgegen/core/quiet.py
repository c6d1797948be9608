"""Third-party notices that edgegen cannot fix at their cause, hidden around the one call that
prints each, matched on its text; everything shows when the user asks (EDGEGEN_VERBOSE=1,
which the CLI's --verbose sets), for bug reports."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager

VERBOSE_ENV = "EDGEGEN_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextmanager
def warnings_hidden(*known: tuple[type[Warning], str]):
    """Inside the block, hide the warnings of these (category, message regex) pairs."""
    with warnings.catch_warnings():
        if not verbose():
            for category, message in known:
                warnings.filterwarnings("ignore", message=message, category=category)
        yield


class _Drop(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


@contextmanager
def log_records_hidden(logger: str, *prefixes: str):
    """Inside the block, drop the records logged on `logger` whose message starts with one of `prefixes`."""
    if verbose():
        yield
        return
    drop, target = _Drop(prefixes), logging.getLogger(logger)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)
