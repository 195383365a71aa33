"""How every command ends: the one place where a failure becomes one line on stderr and an exit status.

Every entry point (`zppo_ray.main`, `.eval`, `.audit`, `.plot`, `.config`, the world builders, the benchmarks)
runs its `main(argv)` through `run_entry`. The statuses (README "Errors and exit statuses"):

    0    done (zppo_ray.audit: every question accounted for)
    1    a bug: the traceback is printed (zppo_ray.audit: also "problems found", printed as PROBLEM lines)
    2    a mistake the user can fix: config, data, model, checkpoint, setup, usage
    3    infrastructure the command could not reach or keep alive (Ray cluster, actors, a full disk);
         a training run continues with trainer.resume=auto
    130  Ctrl-C
    143  SIGTERM obeyed: the step finished and a checkpoint was written (zppo_ray/launch.py)

`--debug` anywhere on the command line (or ZPPO_DEBUG=1) adds the traceback to every failure.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from zppo_ray.errors import DataError, InfraError, Interrupted, Preempted, RemoteFailure, UserError, ray_cause

EXIT_BUG = 1
EXIT_USER = 2
EXIT_INFRA = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what Kubernetes and `ray job` expect of a process that obeyed SIGTERM

# A disk that cannot take the run's files: the work was fine, the place was not (resume=auto continues).
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which finishes its step and checkpoints instead: launch.py's
    PreemptionNotice): stop as Ctrl-C does, cleaning up on the way, and exit 143."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit status) for a failure the user can act on; None for a bug (print its traceback)."""
    from zppo_ray.config.schema import ConfigError  # light: no Ray, no torch

    cause = ray_cause(exc)
    if cause is not None:  # an actor's own exception inside Ray's wrapper (whose text is a formatted traceback)
        return describe(cause)
    if isinstance(exc, ConfigError):
        return f"config error: {exc}", EXIT_USER
    if isinstance(exc, DataError):
        return f"data error: {exc}", EXIT_USER
    if isinstance(exc, UserError):
        return f"{exc.label}: {exc}", EXIT_USER
    if isinstance(exc, Preempted):
        return f"preempted: {exc}", EXIT_PREEMPTED
    if isinstance(exc, Interrupted):
        return f"{exc.how}: {exc}", exc.status
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)", EXIT_PREEMPTED
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)", EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return "broken pipe: the command reading this one's output stopped early", EXIT_BUG
    disk = _disk_error(exc)
    if disk is not None:
        return (f"disk error: {disk}; free space (or make it writable) and rerun; a training run continues from "
                "its last checkpoint with trainer.resume=auto"), EXIT_INFRA
    if isinstance(exc, RemoteFailure):
        return (f"infrastructure error: {_first_line(str(exc))}", EXIT_INFRA) if exc.kind == "infra" else None
    if isinstance(exc, InfraError):
        return f"infrastructure error: {_first_line(str(exc))}", EXIT_INFRA
    if _is_ray_infra(exc):
        return f"infrastructure error: {_first_line(f'{type(exc).__name__}: {exc}')}", EXIT_INFRA
    return None


def _disk_error(exc: BaseException) -> str | None:
    """'FILE: No space left on device' for a disk that refused a write, here or in an actor (zppo_ray's
    RemoteFailure carries it in its message), else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror or exc)
    if isinstance(exc, RemoteFailure):
        for code in DISK_ERRNOS:
            if f"[Errno {code}]" in exc.message:
                return f"in {exc.role}.{exc.method}: {os.strerror(code)}"
    return None


def _is_ray_infra(exc: BaseException) -> bool:
    """A Ray failure of the place, not of the work (zppo_ray/errors.py `classify`), or a connection refused."""
    if isinstance(exc, BrokenPipeError):  # the reader of our output went away (`... | head`): not a cluster
        return False
    if isinstance(exc, ConnectionError):
        return True
    if "ray" not in sys.modules:  # nothing Ray could have raised
        return False
    from zppo_ray.errors import classify

    return not isinstance(exc, (ValueError, KeyError, IndexError, UnicodeError)) and classify(exc) == "infra"


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    more = " (more with --debug)" if len(lines) > 1 else ""
    return (lines[0] if lines else text) + more


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """argv without `--debug`, and whether tracebacks were asked for (the flag or ZPPO_DEBUG=1)."""
    rest = [a for a in argv if a != "--debug"]
    return rest, len(rest) != len(argv) or os.environ.get("ZPPO_DEBUG", "") not in ("", "0")


def run_entry(main: Callable[[list[str]], object], argv: Sequence[str] | None = None, *,
              log_format: str = LOG_FORMAT) -> int:
    """Run `main(argv)` and return its exit status; a failure becomes one line on stderr (module doc).
    Callers do `sys.exit(run_entry(main))`."""
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:  # a test or a notebook may have configured logging already
        logging.basicConfig(level=os.environ.get("ZPPO_LOG_LEVEL", "INFO"), format=log_format)
    from zppo_ray.redact import install_log_redaction

    install_log_redaction()  # credentials in a URL or an override never reach a log line
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        status = main(argv)
        return status if isinstance(status, int) else 0  # a main may return what it made (a run directory)
    except SystemExit as e:  # argparse's usage errors (2) and --help (0) are already printed
        if e.code == signal.SIGTERM:  # ray.init's own handler (sys.exit(15)) in a script that called it directly
            print(describe(Terminated())[0], file=sys.stderr, flush=True)
            return EXIT_PREEMPTED
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)  # sys.exit("message"): Python's own convention, status 1; ours is 2
        return EXIT_USER
    except BaseException as e:  # noqa: BLE001 - every failure ends here, by design (module doc)
        known = describe(e)
        if known is None or debug:
            traceback.print_exc()
            if isinstance(e, RemoteFailure) and e.trace:
                print(f"-- in the actor:\n{e.trace}", file=sys.stderr, end="")
        if known is None:
            print(f"unexpected error ({type(e).__name__}): this is a bug in zppo_ray; please report it with the "
                  "traceback above", file=sys.stderr)
            return EXIT_BUG
        line, status = known
        print(line, file=sys.stderr, flush=True)
        return status
    finally:
        if main_thread:  # a caller in-process (a test, a notebook) gets its own handler back
            signal.signal(signal.SIGTERM, old_term)
