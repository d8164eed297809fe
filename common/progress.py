"""Progress reporting that suits where the output goes.

On a terminal a stage draws a live tqdm bar. In a log (stderr is not a TTY: CI, ``nohup``, a
batch scheduler) carriage-return frames would fill the file with thousands of partial lines, so
a stage instead writes one line when it ends: what it did, how many, how long.

>>> with progress_bar(total=3, desc="hashing files", unit="file") as bar:   # doctest: +SKIP
...     for _ in range(3):
...         bar.update(1)
"""
from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator, TypeVar

T = TypeVar("T")


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (where live bars make sense)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class LineProgress:
    """A bar stand-in for logs: counts quietly and writes one summary line on ``close``.

    Parameters
    ----------
    total : int or None
        Expected number of steps (shown as ``done/total``).
    desc : str
        What the stage does, e.g. ``"embedding with openl3"``.
    unit : str
        Unit of one step (``"file"``, ``"step"``, ``"B"``).
    stream : file-like, optional
        Where the line goes (default: stderr at close time).
    """

    def __init__(self, total: int | None = None, *, desc: str = "", unit: str = "it",
                 stream: IO[str] | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._stream = stream
        self._t0 = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:  # tqdm API
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        seconds = time.perf_counter() - self._t0
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        stream = self._stream or sys.stderr
        print(f"{self.desc}: {count} {self.unit} in {seconds:.1f} s", file=stream, flush=True)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoProgress(LineProgress):
    def close(self) -> None:
        self._closed = True


def progress_bar(total: int | None = None, *, desc: str = "", unit: str = "it",
                 enabled: bool = True, **tqdm_kwargs):
    """A progress bar for one stage: tqdm on a terminal, one closing line in a log.

    Parameters
    ----------
    total : int or None
    desc, unit : str
    enabled : bool
        ``False`` (``--quiet``) reports nothing at all.
    **tqdm_kwargs
        Passed to tqdm on a terminal (e.g. ``unit_scale=True``, ``leave=False``).

    Returns
    -------
    An object with ``update(n)``, ``close()`` and context-manager use.
    """
    if not enabled:
        return _NoProgress(total, desc=desc, unit=unit)
    if stderr_is_terminal():
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit=unit, **tqdm_kwargs)
    return LineProgress(total, desc=desc, unit=unit)


def track(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool = True, **tqdm_kwargs) -> Iterator[T]:
    """Iterate over ``items`` while reporting progress as :func:`progress_bar` does."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress_bar(total, desc=desc, unit=unit, enabled=enabled, **tqdm_kwargs)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
