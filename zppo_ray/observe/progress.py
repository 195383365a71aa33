"""Progress bars for every phase a user waits on (world build, role start, training, evaluation, method
comparison), with rate and time left.

Bars draw only on a terminal: piped or CI output (stderr not a TTY) gets none, and each phase keeps its
plain log lines there instead. ZPPO_PROGRESS=1 / 0 forces them on / off.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def enabled() -> bool:
    forced = os.environ.get("ZPPO_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "it", **kw) -> tqdm:
    """A tqdm bar on stderr; a disabled one (every call a no-op) when `enabled()` is false."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled(), dynamic_ncols=True, file=sys.stderr,
                **kw)


def say(line: str) -> None:
    """Print a line without tearing an active bar (tqdm.write moves the bars below it)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()  # a pipe (CI, `ray job logs`) sees each line when it happens
