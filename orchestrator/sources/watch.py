"""File-watch source: filesystem events only wake a debounced, level-triggered reconcile loop.

watchdog's inotify observer (or, where inotify is unavailable or its watches are exhausted, our
``ManifestPoller``, which stats only the manifests) feeds ``Waker.poke()``; the events carry no data.
``run_loop`` waits for a wake-up or the periodic resync,
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


def is_relevant(path: str, root: str = "") -> bool:
    """Whether an event on ``path`` can change the manifests (directories always can: renames).
    Under a watched directory ``root``, hidden files and directories (``.git``) are skipped, as the
    manifest loader skips them: a ``git commit`` in a watched checkout wakes nothing."""
    if root:
        rel = os.path.relpath(path, root)
        if rel.startswith("..") or any(part.startswith(".") for part in rel.split(os.sep) if part != "."):
            return False
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
    """Watch directories recursively and files through their directory (not recursively, and only
    events on that very file count); falls back to ``ManifestPoller`` when inotify fails."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def __init__(self, root: str, only: frozenset[str]) -> None:
            self.root, self.only = root, only      # only: the watched files in root (empty: all of root)

        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return
            if event.is_directory and event.event_type == "modified":
                return                       # any child change touches the dir; the child's event counts
            srcs = [os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")]
            if self.only:
                hit = any(p in self.only for p in srcs)
            else:
                hit = any(p and is_relevant(p, self.root) for p in srcs)
            if hit:
                waker.poke()

    dirs: set[str] = set()
    files: dict[str, set[str]] = {}
    for p in (x.absolute() for x in paths):
        if p.is_dir():
            dirs.add(str(p))
        else:
            files.setdefault(str(p.parent), set()).add(str(p))

    def schedule(observer: Any) -> Any:
        for d in sorted(dirs):
            observer.schedule(Handler(d, frozenset()), d, recursive=True)
        for d, names in sorted(files.items()):
            observer.schedule(Handler(d, frozenset(names)), d, recursive=False)
        observer.daemon = True
        observer.start()
        return observer

    if not polling:
        try:
            return schedule(Observer())
        except OSError as exc:               # inotify missing, or max_user_watches/instances exhausted
            log.warning("inotify unavailable, polling instead", error=str(exc))
    poller = ManifestPoller(sorted(dirs), sorted(f for names in files.values() for f in names), waker)
    poller.start()
    return poller


class ManifestPoller(threading.Thread):
    """The polling fallback: every ``interval_s``, a fingerprint of the manifests only (path, inode,
    size, mtime of each ``*.yaml``/``*.yml`` the loader would read); a change pokes the waker.

    watchdog's own poller stats every file of the tree each second (9% of a core over 10,000 files);
    this one stats each directory, lists only those that changed (``scandir`` types need no stat) and
    stats only the manifests. Same ``stop()``/``join()`` as a watchdog observer."""

    def __init__(self, dirs: Sequence[str], files: Sequence[str], waker: Waker,
                 interval_s: float = 1.0) -> None:
        super().__init__(name="manifest-poller", daemon=True)
        self.dirs, self.files, self.waker, self.interval_s = list(dirs), list(files), waker, interval_s
        self._stop_event = threading.Event()
        self._cache: dict[str, tuple[tuple[int, int, int], list[str], list[str]]] = {}
        self._last: frozenset[tuple[str, int, int, int]] = frozenset()

    def _listing(self, d: str) -> tuple[list[str], list[str]] | None:
        """(subdirs, manifests) of ``d``, rescanned only when the directory changed: its mtime moves on
        every create, delete and rename in it. A listing younger than the mtime's coarse granularity
        could miss a change made in the same tick (git's "racy" case), so it is not trusted yet."""
        try:
            st = os.stat(d)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        cached = self._cache.get(d)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        subdirs, manifests = [], []
        try:
            entries = list(os.scandir(d))
        except OSError:
            return None
        for e in entries:
            if e.name.startswith("."):
                continue                     # hidden, as the loader skips them (.git)
            try:
                is_dir = e.is_dir()
            except OSError:
                continue
            if is_dir:
                subdirs.append(e.path)
            elif any(fnmatch.fnmatch(e.name, pat) for pat in _MANIFEST):
                manifests.append(e.path)
        if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
            self._cache[d] = (key, subdirs, manifests)
        return subdirs, manifests

    def fingerprint(self) -> frozenset[tuple[str, int, int, int]]:
        out: set[tuple[str, int, int, int]] = set()

        def add(path: str) -> None:
            try:
                st = os.stat(path)
            except OSError:
                return                       # gone between listing and stat: absent from the set
            out.add((path, st.st_ino, st.st_size, st.st_mtime_ns))

        def walk(d: str, depth: int) -> None:
            listing = self._listing(d)
            if listing is None or depth > 64:   # gone, or a symlink loop the loader would not survive
                return
            for sub in listing[0]:
                walk(sub, depth + 1)
            for f in listing[1]:
                add(f)

        for d in self.dirs:
            walk(d, 0)
        for f in self.files:
            add(f)
        return frozenset(out)

    def start(self) -> None:
        # the baseline is taken before returning: a change made right after start_observer() counts
        self._last = self.fingerprint()
        super().start()

    def run(self) -> None:
        last = self._last
        while not self._stop_event.wait(self.interval_s):
            now = self.fingerprint()
            if now != last:
                self.waker.poke()
                last = now

    def stop(self) -> None:
        self._stop_event.set()


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
