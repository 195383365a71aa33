"""Failure classes, and the one function that decides what a failure means.

Two kinds of failure need opposite reactions (docs: README "Recovery"):

* infrastructure: an actor process died, a node went away, a call ran past its deadline. The work was fine;
  the place was not. Retry it elsewhere and replace the place.
* data: this particular input cannot be processed (a prompt longer than the engine allows, an image that
  does not decode). Retrying elsewhere fails the same way: retry once on its own (it may have failed only
  because a neighbour in its batch did), then skip it, counted and logged.

Anything else is a bug and stops the run with its traceback.

Every error raised inside an actor method is converted by `boundary` into a `RemoteFailure` before it
crosses the Ray boundary: plain picklable fields (kind, role, method, message, traceback text), so the
driver never fails to unpickle a library's exception type (vLLM and CUDA errors often cannot be pickled)
and always knows which actor and verb failed.
"""

from __future__ import annotations

import functools
import traceback
from typing import Any, Callable, Literal

Kind = Literal["infra", "data", "bug"]

# Errors raised for one input, by this project and the libraries it calls: a retry elsewhere cannot help.
DATA_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, IndexError, UnicodeError)


class ZppoError(Exception):
    """Base of this project's errors. Arguments are plain values only, so every subclass pickles."""


class UserError(ZppoError):
    """A mistake the user can fix (a file, a path, an argument): the entry points print `label: message` on one
    line and exit 2 (zppo_ray/cli.py). The message names the file, key or argument and what to do."""

    label = "error"


class SetupError(UserError):
    """What a run needs is not installed or cannot be built here (an optional package, a model conversion);
    the message says what to install or fix."""

    label = "setup error"


class ModelError(UserError):
    """A model directory is missing or incomplete (no config, tokenizer or safetensors weights)."""

    label = "model error"


class CheckpointError(UserError):
    """A checkpoint or run directory to read is missing or incomplete."""

    label = "checkpoint error"


class RunDirError(UserError):
    """A run directory to read (audit, plot, compare) is missing or holds no run yet."""

    label = "run directory error"


class UsageError(UserError):
    """A command-line argument is wrong in a way argparse cannot see (a value out of range, a clash)."""

    label = "usage error"


class Interrupted(ZppoError):
    """Ctrl-C or SIGTERM before a checkpoint could be taken: the message says what was kept (the run directory,
    the last checkpoint) and how to continue; `status` is the exit status (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, message: str, status: int = 130):
        super().__init__(message, status)
        self.status = status

    @property
    def how(self) -> str:
        return "terminated (SIGTERM)" if self.status == 143 else "interrupted (Ctrl-C)"

    def __str__(self) -> str:
        return str(self.args[0])


class Preempted(ZppoError):
    """SIGTERM arrived; the run stopped at a step boundary after writing a checkpoint."""


class DataError(ZppoError, ValueError):
    """One input cannot be processed (a question, a row, a data set as configured); the message names the
    input and why. `origin` (file, row) and `reason` (a short code such as "missing_answer") are for
    counting and reports."""

    def __init__(self, message: str, *, origin: str = "", reason: str = ""):
        super().__init__(message)
        self.origin = origin
        self.reason = reason

    def __reduce__(self):  # keyword fields survive pickling across the Ray boundary
        return (_data_error, (str(self), self.origin, self.reason))


def _data_error(message: str, origin: str, reason: str) -> DataError:
    return DataError(message, origin=origin, reason=reason)


class InfraError(ZppoError):
    """The infrastructure failed (a role has no live actor left, a restart budget is spent)."""


class LearnerLost(InfraError):
    """A learner rank died. Its optimizer state is gone with it, so the run continues only from a checkpoint."""


class RemoteFailure(ZppoError):
    """An exception raised inside an actor, converted at the boundary (see module doc)."""

    def __init__(self, kind: str, role: str, method: str, message: str, trace: str = ""):
        super().__init__(kind, role, method, message, trace)
        self.kind, self.role, self.method, self.message, self.trace = kind, role, method, message, trace

    def __str__(self) -> str:
        return f"{self.kind} failure in {self.role}.{self.method}: {self.message}"


def classify(exc: BaseException) -> Kind:
    """infra | data | bug for an exception caught on the driver (Ray's wrappers are looked through)."""
    import ray.exceptions as rex

    if isinstance(exc, RemoteFailure):
        return exc.kind  # type: ignore[return-value]
    if isinstance(exc, rex.RayTaskError):  # an exception raised in the actor: look at its cause
        cause = ray_cause(exc)
        return classify(cause) if cause is not None else "bug"
    if isinstance(exc, (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
                        rex.GetTimeoutError, rex.TaskCancelledError, rex.OutOfMemoryError,
                        rex.ActorUnschedulableError, rex.RaySystemError, InfraError, TimeoutError,
                        ConnectionError)):
        return "infra"
    if isinstance(exc, (DataError, *DATA_ERRORS)):
        return "data"
    return "bug"


def ray_cause(exc: BaseException) -> BaseException | None:
    """The exception an actor raised, when `exc` is Ray's wrapper of it (ray.exceptions.RayTaskError), else None.
    Light: without Ray imported, nothing can be Ray's wrapper."""
    import sys

    if "ray" not in sys.modules:
        return None
    from ray.exceptions import RayTaskError

    cause = getattr(exc, "cause", None)
    return cause if isinstance(exc, RayTaskError) and isinstance(cause, BaseException) and cause is not exc else None


def remote_cause(exc: BaseException) -> BaseException:
    """The RemoteFailure inside Ray's wrapper, when there is one (for messages)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RemoteFailure) else exc


def boundary(role: str) -> Callable:
    """Decorator for actor methods: any exception leaves as a picklable RemoteFailure with its kind."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except RemoteFailure:
                raise
            except Exception as e:  # noqa: BLE001 - converted, not swallowed
                name = getattr(self, "name", role)
                raise RemoteFailure(_local_kind(e), name, fn.__name__, f"{type(e).__name__}: {e}",
                                    traceback.format_exc(limit=20)) from None
        return inner
    return wrap


def _local_kind(exc: BaseException) -> Kind:
    """Inside an actor: a data error is one of DATA_ERRORS; memory/device/connection trouble is infra."""
    if isinstance(exc, (DataError, *DATA_ERRORS)):
        return "data"
    if isinstance(exc, (InfraError, MemoryError, TimeoutError, ConnectionError, OSError)):
        return "infra"
    text = str(exc).lower()
    if "out of memory" in text or "cuda error" in text or "nccl" in text:
        return "infra"
    return "bug"
