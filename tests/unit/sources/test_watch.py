"""The watch source: relevance filter, debounced waker, and a real watchdog observer on a temp dir."""

from __future__ import annotations

import threading
import time
from pathlib import Path

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
