"""The watch source: relevance filter, debounced waker, and a real watchdog observer on a temp dir."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from orchestrator.sources.watch import PassOutcome, Waker, is_relevant, run_loop, start_observer


def test_relevance_filter() -> None:
    assert is_relevant("/x/stack.yaml")
    assert is_relevant("/x/stack.yml")
    assert is_relevant("/x/newdir")
    for name in (".stack.yaml.swp", "stack.yaml~", ".#stack.yaml", "4913", "x.tmp", "notes.txt"):
        assert not is_relevant(f"/x/{name}"), name


def test_burst_gives_one_wakeup() -> None:
    w = Waker()
    for _ in range(50):
        w.poke()
    assert w.wait(timeout=1, debounce=0.01) is True
    assert w.wait(timeout=0.05, debounce=0.01) is False


def test_debounce_waits_for_quiet() -> None:
    w = Waker()

    def poker() -> None:
        for _ in range(5):
            w.poke()
            time.sleep(0.02)

    t = threading.Thread(target=poker)
    t0 = time.monotonic()
    t.start()
    assert w.wait(timeout=2, debounce=0.1)
    assert time.monotonic() - t0 >= 0.18        # last poke at ~0.08 s plus 0.1 s of quiet
    t.join()


def test_observer_wakes_on_atomic_save(tmp_path: Path) -> None:
    target = tmp_path / "stack.yaml"
    target.write_text("a: 1\n")
    w = Waker()
    obs = start_observer([tmp_path], w)
    try:
        time.sleep(0.1)
        (tmp_path / ".stack.yaml.swp").write_text("junk")       # ignored
        assert not w.wait(timeout=0.3, debounce=0.05)
        tmp = tmp_path / "stack.yaml.new"
        tmp.write_text("a: 2\n")
        tmp.rename(target)                                       # an editor's atomic save
        assert w.wait(timeout=3, debounce=0.05)
    finally:
        obs.stop()
        obs.join()


def test_polling_fallback(tmp_path: Path) -> None:
    w = Waker()
    obs = start_observer([tmp_path], w, polling=True)
    try:
        time.sleep(0.2)
        (tmp_path / "s.yaml").write_text("x: 1\n")
        assert w.wait(timeout=5, debounce=0.05)
    finally:
        obs.stop()
        obs.join()


def test_run_loop_resyncs_and_survives_crashes() -> None:
    w = Waker()
    triggers: list[str] = []

    def pass_fn(trigger: str) -> PassOutcome:
        triggers.append(trigger)
        if len(triggers) == 2:
            raise RuntimeError("bug")
        return PassOutcome(ok=True)

    n = run_loop(pass_fn, w, resync_s=0.01, debounce_s=0.0, max_passes=3)
    assert n == 3
    assert triggers == ["start", "resync", "resync"]


def test_polling_fallback_when_inotify_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what watchdog raises when max_user_watches/instances are exhausted: the observer polls instead
    import errno

    import watchdog.observers

    class Exhausted(watchdog.observers.Observer):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
    monkeypatch.setattr(watchdog.observers, "Observer", Exhausted)
    w = Waker()
    obs = start_observer([tmp_path], w)
    try:
        assert type(obs).__name__ == "ManifestPoller"
        (tmp_path / "stack.yaml").write_text("x: 1\n")
        assert w.wait(timeout=5, debounce=0.01) is True          # the poller saw the new file
    finally:
        obs.stop()
        obs.join(timeout=5)


def test_hidden_paths_under_a_watched_dir_are_ignored() -> None:
    # the loader skips hidden files and dirs: a git commit in a watched checkout must not wake a pass
    for p in ("/w/.git/HEAD", "/w/.git/objects/ab/cdef0123", "/w/sub/.hidden/x.yaml", "/w/.x.yaml"):
        assert not is_relevant(p, "/w"), p
    assert is_relevant("/w/sub/app.yaml", "/w") and is_relevant("/w/newdir", "/w")
    assert is_relevant("/home/u/.config/stacks/app.yaml", "/home/u/.config/stacks")  # a hidden root is fine


def test_watched_file_ignores_its_siblings(tmp_path: Path) -> None:
    target = tmp_path / "stack.yaml"
    target.write_text("a: 1\n")
    (tmp_path / "sub").mkdir()
    w = Waker()
    obs = start_observer([target], w)
    try:
        time.sleep(0.1)
        (tmp_path / "other.yaml").write_text("b: 1\n")            # a sibling manifest: not watched
        (tmp_path / "sub" / "deep.yaml").write_text("c: 1\n")     # nor the parent's subtree
        assert not w.wait(timeout=0.3, debounce=0.05)
        tmp = tmp_path / ".stack.yaml.tmp"
        tmp.write_text("a: 2\n")
        tmp.rename(target)
        assert w.wait(timeout=3, debounce=0.05)
    finally:
        obs.stop()
        obs.join()


def test_manifest_poller_fingerprint(tmp_path: Path) -> None:
    import os

    from orchestrator.sources.watch import ManifestPoller
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "app.yaml").write_text("x: 1\n")
    (tmp_path / "a" / "page.html").write_text("<p>\n")
    (tmp_path / ".git").mkdir()
    old = time.time() - 60
    for d in (tmp_path, tmp_path / "a", tmp_path / ".git"):
        os.utime(d, (old, old))                # old enough for the listing to be cached
    p = ManifestPoller([str(tmp_path)], [], Waker())
    first = p.fingerprint()
    assert {f for f, *_ in first} == {str(tmp_path / "a" / "app.yaml")}
    (tmp_path / "a" / "page.html").write_text("<p>changed\n")  # not a manifest
    (tmp_path / ".git" / "HEAD.yaml").write_text("hidden\n")   # hidden dir
    assert p.fingerprint() == first
    (tmp_path / "a" / "app.yaml").write_text("x: 22\n")          # in place: size and mtime
    second = p.fingerprint()
    assert second != first
    (tmp_path / "a" / "new.yml").write_text("y: 1\n")            # the dir's mtime moves: rescanned
    assert {f for f, *_ in p.fingerprint()} == {str(tmp_path / "a" / "app.yaml"),
                                                str(tmp_path / "a" / "new.yml")}
