"""File-watch source: filesystem events only wake a debounced, level-triggered reconcile loop.

watchdog observers (inotify, or polling where inotify is unavailable or its watches are exhausted) feed
``Waker.poke()``; the events carry no data. ``run_loop`` waits for a wake-up or the periodic resync,
lets a burst of events settle (debounce), then calls ``pass_fn`` which re-reads every manifest and
re-observes every container (level-triggered: a pass never trusts what the last one saw).

Neighbours: ``cli.source_cmds`` builds ``pass_fn`` from the manifest loader and the reconciler;
``sources.gitops`` reuses ``Waker`` and ``run_loop`` with a git fetch as its pass.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import logs

log = logs.get("watch")

# editors' temp and swap files: vim (.swp, .swx, 4913, ~), emacs (.#x, #x#), JetBrains (___jb_),
# generic (.tmp, .part); none of them is a manifest, and atomic saves still end in an event on the real name
_IGNORED = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp", "*.part", "*___jb_*___",
            ".*.kate-swp", "*.bak")
_MANIFEST = ("*.yaml", "*.yml")


def is_relevant(path: str) -> bool:
    """Whether an event on ``path`` can change the manifests (directories always can: renames)."""
    name = os.path.basename(path.rstrip("/"))
    if not name or any(fnmatch.fnmatch(name, pat) for pat in _IGNORED):
        return False
    if "." not in name:                      # a directory (created, moved) or an extension-less file
        return True
    return any(fnmatch.fnmatch(name, pat) for pat in _MANIFEST)


class Waker:
    """A level, not a queue: any number of pokes before the loop looks give one wake-up."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._poked = False
        self._last_poke = 0.0
        self.stopped = False

    def poke(self) -> None:
        with self._cond:
            self._poked = True
            self._last_poke = time.monotonic()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait(self, timeout: float, debounce: float) -> bool:
        """Block until poked (then quiet for ``debounce`` seconds) or ``timeout``; True when poked."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._poked and not self.stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            # let the burst settle: editors write, rename and chmod in quick succession
            while self._poked and not self.stopped:
                quiet_for = time.monotonic() - self._last_poke
                if quiet_for >= debounce:
                    break
                self._cond.wait(debounce - quiet_for)
            poked = self._poked
            self._poked = False
            return poked


@dataclass(frozen=True)
class PassOutcome:
    """What one pass did, for the structured log line of the pass."""

    ok: bool
    changed: int = 0
    message: str = ""


def start_observer(paths: Sequence[Path], waker: Waker, *, polling: bool = False) -> Any:
    """Watch every path (files by their directory); falls back to polling when inotify fails."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return
            if event.is_directory and event.event_type == "modified":
                return                       # any child change touches the dir; the child's event counts
            srcs = [os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")]
            if any(p and is_relevant(p) for p in srcs):
                waker.poke()

    dirs = sorted({str(p if p.is_dir() else p.parent) for p in (x.absolute() for x in paths)})

    def schedule(observer: Any) -> Any:
        for d in dirs:
            observer.schedule(Handler(), d, recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    if not polling:
        try:
            return schedule(Observer())
        except OSError as exc:               # inotify missing, or max_user_watches/instances exhausted
            log.warning("inotify unavailable, polling instead", error=str(exc))
    return schedule(PollingObserver(timeout=1.0))


def run_loop(pass_fn: Callable[[str], PassOutcome], waker: Waker, *, resync_s: float = 30.0,
             debounce_s: float = 0.1, max_passes: int | None = None) -> int:
    """Run passes until ``waker.stop()``: one at start, one per (debounced) wake-up, one per resync.

    ``pass_fn(trigger)`` must never raise for bad input (it reports and keeps the last good state);
    an unexpected exception is logged and the loop goes on. Returns the number of passes run.
    """
    passes = 0
    trigger = "start"
    while not waker.stopped:
        t0 = time.monotonic()
        try:
            outcome = pass_fn(trigger)
        except Exception as exc:             # a bug must not end a long-running loop; log it loudly
            log.error("reconcile pass crashed", trigger=trigger, error=repr(exc))
            outcome = PassOutcome(ok=False, message=repr(exc))
        log.info("pass", trigger=trigger, ok=outcome.ok, changed=outcome.changed,
                 duration_ms=round((time.monotonic() - t0) * 1000, 1), message=outcome.message)
        passes += 1
        if max_passes is not None and passes >= max_passes:
            break
        trigger = "change" if waker.wait(resync_s, debounce_s) else "resync"
    return passes
