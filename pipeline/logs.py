"""Logging for the workflow's jobs: one readable line per event, written to the rule's log file."""

from __future__ import annotations

import logging
import sys
import time


def setup(log_path: str | None = None, level: int = logging.INFO) -> None:
    """Send the ``pipeline`` loggers to ``log_path`` (stderr without one), one timestamped line
    each; an uncaught exception is written there too before Python reports it."""
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger("pipeline")
    root.setLevel(level)
    root.handlers.clear()
    handler = logging.FileHandler(log_path, mode="w") if log_path else logging.StreamHandler()
    handler.setFormatter(fmt)
    root.addHandler(handler)

    def excepthook(kind, value, tb):
        root.error("failed: %s", value, exc_info=(kind, value, tb))
        sys.__excepthook__(kind, value, tb)

    if log_path:
        sys.excepthook = excepthook


class Progress:
    """Report ``done / total`` units with rate and ETA as plain log lines, at most every
    ``every`` seconds (no carriage returns, so the log reads well as a file)."""

    def __init__(self, log: logging.Logger, total: int, unit: str, every: float = 10.0):
        self.log, self.total, self.unit, self.every = log, total, unit, every
        self.start = self.last = time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self.last < self.every and done < self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        self.log.info(
            "%d/%d %s (%.0f%%), %.1f %s/s, ETA %.0fs%s",
            done,
            self.total,
            self.unit,
            100.0 * done / self.total,
            rate,
            self.unit,
            eta,
            f", {extra}" if extra else "",
        )


def console_warning(log: logging.Logger, message: str) -> None:
    """A warning the user must see: in the job's log and on the console (stderr, which
    Snakemake shows), not only in the log file."""
    log.warning(message)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def quiet_transformers() -> None:
    """No progress bars from transformers: jobs log their own progress lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
