"""User-facing errors.

Every error a user can cause by what they typed or pointed at is a ``SearchError``. The CLI
prints it as one line on stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class SearchError(Exception):
    """A problem with the user's input, stated as what is wrong and how to fix it."""

    exit_code = 2


class SpaceError(SearchError):
    """A search-space file or name is malformed or describes an impossible space."""


class ConfigError(SearchError):
    """A trial config (for example from ``--set``) holds an unknown key or a bad value."""


class DataError(SearchError):
    """A dataset is missing, unreadable or malformed."""


class TrackingError(SearchError):
    """The MLflow tracking store cannot be reached, or holds nothing that fits the request."""


class ClusterError(SearchError):
    """The Ray cluster cannot be reached or refuses the connection."""


class Interrupted(SearchError):
    """The search was stopped (Ctrl-C: 130, SIGTERM: 143) before it finished; ``--resume`` continues it."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SearchFailed(SearchError):
    """The search ran, but no trial produced a result (every one failed); not a user error."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, Kubernetes): unwinds like Ctrl-C, exits 143."""

    exit_code = 143


class TrialFailed(Exception):
    """A trial ended without a usable result (diverged, or raised); not a user error."""


def cause_of(err: BaseException | None, kind: type[E] | tuple[type[BaseException], ...]) -> E | None:
    """``err`` itself or the first exception of ``kind`` it was raised from or while handling (a library
    that wraps what a callback raised, as Ray Tune wraps it in a ``TuneError``, keeps it there)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err  # type: ignore[return-value]
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
