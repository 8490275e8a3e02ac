"""One exit status for every command (the Nagios/Icinga plugin convention).

`doctor` and the listing commands share it, so any of them drops into monitoring as is.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3  # a needed source could not be observed
    USAGE = 64  # bad flag, malformed URL, unknown scheme (EX_USAGE)
    INTERRUPTED = 130


class CeleryctlError(Exception):
    """An expected failure: printed as one clear line, never as a traceback."""

    status = ExitStatus.UNKNOWN


class UsageError(CeleryctlError):
    status = ExitStatus.USAGE


class SourceError(CeleryctlError):
    """A source (broker, backend, API) could not be observed."""

    status = ExitStatus.UNKNOWN


def exit_status_for(exc: BaseException) -> ExitStatus:
    """The single mapping from exceptions to exit statuses."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(exc, CeleryctlError):
        return exc.status
    return ExitStatus.UNKNOWN


def worst(*statuses: ExitStatus) -> ExitStatus:
    """Combine statuses: UNKNOWN outranks CRITICAL only when nothing is critical,
    as in the plugin convention (critical > unknown > warning > ok)."""
    order = [ExitStatus.OK, ExitStatus.WARNING, ExitStatus.UNKNOWN, ExitStatus.CRITICAL]
    present = [s for s in statuses if s in order]
    return max(present, key=order.index) if present else ExitStatus.OK
