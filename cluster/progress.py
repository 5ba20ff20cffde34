"""A sweep's progress on stderr, from its first second to its last chunk.

Example::

    from cluster.progress import SweepProgress
    prog = SweepProgress("quickstart", enabled=True)
    prog.starting(spec, address=None)              # before Ray and the workers start
    with prog.computing(chunks=8, codes=64, done_before=0, workers=2):
        prog.chunk_done("dcgan-faces/z/mse", chunk=0, codes=8, seconds=5.2)

Lines start with ``sweep NAME:``. On a terminal the chunks advance a tqdm bar;
anywhere else (a pipe, a log file, a Ray job's log) each finished chunk is one
line, so a log shows progress without a bar's carriage returns. ``enabled=False``
(``--quiet``) prints nothing. Results never go here: stdout is for them.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["Steps", "SweepProgress"]


class SweepProgress:
    """One sweep's progress lines (see the module docstring); ``stream`` defaults to ``sys.stderr``."""

    def __init__(self, name: str, *, enabled: bool = True, stream=None, tty: bool | None = None) -> None:
        self.name, self.enabled = name, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", lambda: False)())
        self.total = self.finished = self.codes = 0
        self._bar = None
        self._t0 = time.perf_counter()

    def say(self, text: str) -> None:
        """One line ``sweep NAME: text`` (above the bar on a terminal)."""
        if not self.enabled:
            return
        line = f"sweep {self.name}: {text}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def starting(self, spec, *, address: str | None) -> None:
        """The first line, before Ray and the workers start (loading generators can take a while)."""
        from .spec import ALL_LAYERS

        n, size = spec.n_codes, spec.chunk_size
        chunks = -(-n // size)
        named = [t for t in spec.targets if t != ALL_LAYERS]
        groups = sum(len(g.spaces) for g in spec.generators) * (len(named) + (ALL_LAYERS in spec.targets))
        if ALL_LAYERS in spec.targets:  # one group per layer: known once a worker has loaded the generator
            what = f"at least {groups} groups x {n} codes, {chunks} chunks of {size} codes each"
        else:
            what = f"{groups} group{'s' * (groups != 1)} x {n} codes, {groups * chunks} chunks of {size} codes"
        workers = spec.resources.get("workers")
        who = f"{workers} worker{'s' * (workers != 1)}" if workers else "a worker per free slot"
        self.say(f"{what}; starting {f'Ray at {address}' if address else 'embedded Ray'} and {who}")

    @contextmanager
    def computing(self, *, chunks: int, codes: int, done_before: int, workers: int):
        """Around the chunks' computation: a line with what is left, a bar or a line per chunk, a summary."""
        self.total, self.codes, self._t0 = chunks, codes, time.perf_counter()
        skipped = f" ({done_before} already done)" if done_before else ""
        if chunks:
            self.say(f"computing {chunks} chunks, {codes} codes{skipped} on {workers} worker{'s' * (workers != 1)}")
        else:
            self.say(f"nothing to compute: all {done_before} chunks are done")
        if self.enabled and self.tty and chunks:
            from tqdm import tqdm

            self._bar = tqdm(total=codes, unit="code", file=self.stream, dynamic_ncols=True, desc=self.name)
        try:
            yield self
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if chunks:
                seconds = time.perf_counter() - self._t0
                self.say(f"{self.finished}/{chunks} chunks done in {seconds:.1f} s")

    def chunk_done(self, key: str, chunk: int, codes: int, seconds: float | None = None) -> None:
        """A chunk was computed and written: advance the bar, or print its line."""
        self.finished += 1
        if self._bar is not None:
            self._bar.update(codes)
        elif not self.tty:
            took = f", {seconds:.1f} s" if seconds is not None else ""
            self.say(f"chunk {self.finished}/{self.total} done (group {key} chunk {chunk}, {codes} codes{took})")


class Steps:
    """A long command's progress on stderr: ``gangeo CMD: ...`` lines, and its steps as a tqdm bar on a
    terminal or one line each elsewhere (a pipe, a log), so a log shows where a command is.

    Example::

        steps = Steps("search", enabled=not args.quiet)
        steps.say("loading dcgan-faces")
        with steps.over(20, "CMA-ES runs") as step:
            for s in range(20):
                ...
                step(f"cma seed {s}: {value:.4g}")
    """

    def __init__(self, command: str, *, enabled: bool = True, stream=None, tty: bool | None = None) -> None:
        self.command, self.enabled = command, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", lambda: False)())
        self._t0 = time.perf_counter()

    def say(self, text: str) -> None:
        """One line ``gangeo CMD: text``."""
        if self.enabled:
            print(f"gangeo {self.command}: {text}", file=self.stream, flush=True)

    @contextmanager
    def over(self, total: int, what: str):
        """Around ``total`` steps; yields ``step(note)``, called after each step."""
        bar = None
        if self.enabled and self.tty:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=f"{self.command} {what}", file=self.stream, dynamic_ncols=True)
        t0, done = time.perf_counter(), 0

        def step(note: str = "") -> None:
            nonlocal done
            done += 1
            if bar is not None:
                bar.update(1)
            else:
                self.say(f"{what} {done}/{total}{': ' + note if note else ''} ({time.perf_counter() - t0:.1f} s)")

        try:
            yield step
        finally:
            if bar is not None:
                bar.close()

    def finished(self) -> None:
        """The last line: how long the command took."""
        self.say(f"done in {time.perf_counter() - self._t0:.1f} s")
