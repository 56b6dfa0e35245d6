"""The whole exception tree of the orchestrator.

Every error a user can cause or meet is one of these; library exceptions (yaml, jsonschema, OSError from
the kernel, sqlite3, pyroute2) are translated once, at the module that calls the library, with
``raise ... from exc``. Only ``orchestrator.cli`` catches broadly and turns these into exit codes.

    OrchestratorError                  exit 1 unless stated
    ├── ManifestError                  bad user input in manifests; carries a list of Problem
    ├── UsageError                     bad CLI flags or arguments (exit 2 in argparse style)
    ├── NotImplementedVerb             a verb that is not built yet (exit 3)
    ├── StateError                     the state store is unreadable / locked / inconsistent
    │   └── LockedError                another apply holds the lock
    ├── ImageError                     image import / lookup / removal problems
    │   └── UnsafeArchiveError         a layer tar tried to escape or break a cap
    ├── RuntimeFailure                 a kernel or runtime operation failed (names op, path, errno)
    │   ├── ContainerNotFound
    │   ├── TransientRuntimeError      worth retrying with backoff
    │   └── ExecTimeout                an exec'd process outlived its timeout and was killed
    ├── NetworkError                   bridge, veth, address, port-publishing failures
    ├── ReconcileError                 a plan could not be carried out (names the action and why)
    ├── SourceError                    watch / git source failures (fetch, checkout, signature)
    └── InteropError                   compose import / kubernetes export problems
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input, located as precisely as we can.

    ``str(problem)`` is the line a user sees: ``file:line:col: json.path: message``.
    Line and column are 1-based; 0 means unknown.
    """

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line:
            where += f":{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class OrchestratorError(Exception):
    """Base of every error we raise on purpose."""

    exit_code = 1


class ManifestError(OrchestratorError):
    """Invalid manifests. Holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.path, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(OrchestratorError):
    exit_code = 2


class NotImplementedVerb(OrchestratorError):
    exit_code = 3


class StateError(OrchestratorError):
    pass


class LockedError(StateError):
    pass


class ImageError(OrchestratorError):
    pass


class UnsafeArchiveError(ImageError):
    pass


class RuntimeFailure(OrchestratorError):
    """A runtime operation failed. ``op`` and ``path`` name what, ``errno`` why, when known."""

    def __init__(self, message: str, *, op: str = "", path: str = "", errno: int = 0) -> None:
        self.op, self.path, self.errno = op, path, errno
        detail = ", ".join(x for x in (f"op={op}" if op else "", f"path={path}" if path else "",
                                       f"errno={errno}" if errno else "") if x)
        super().__init__(f"{message} ({detail})" if detail else message)


class ContainerNotFound(RuntimeFailure):
    pass


class TransientRuntimeError(RuntimeFailure):
    pass


class NetworkError(OrchestratorError):
    pass


class ReconcileError(OrchestratorError):
    pass


class SourceError(OrchestratorError):
    pass


class InteropError(OrchestratorError):
    pass


class ExecTimeout(RuntimeFailure):
    """An exec'd process ran past its timeout and was killed (a hung health probe, say)."""
