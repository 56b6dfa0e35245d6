"""structlog set-up, and nothing else. ``--log-format json|console`` picks the renderer.

structlog (and the asyncio it pulls in) costs ~50 ms to import, on every CLI start, while most commands
log nothing at the default level. So ``get()`` hands out a small proxy that drops calls below the
configured level without importing anything, and loads and configures structlog on the first record
that will actually be written. Every rendered line passes through the process-wide secret Redactor
(``secrets.redact``), so a secret value the process resolved never reaches the log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40,
           "critical": 50, "fatal": 50}
_config = {"fmt": "console", "level": "warning"}
_configured = False


class _Stderr:
    """Looks ``sys.stderr`` up at every write, so a logger configured once keeps working when the
    stream is replaced later (pytest's capture, a daemonised process)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _structlog() -> Any:
    global _configured
    if "rich" in sys.modules:
        import structlog
    else:
        # structlog's dev module imports rich (present with our dev tools) for pretty tracebacks we
        # never show; hide it while structlog loads, then restore
        sys.modules["rich"] = None  # type: ignore[assignment]
        try:
            import structlog
        finally:
            del sys.modules["rich"]
    if not _configured:
        _configured = True
        from orchestrator.secrets.redact import scrubbing_renderer
        renderer: Any
        if _config["fmt"] == "json":
            renderer = structlog.processors.JSONRenderer(sort_keys=True)
        else:
            renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                # JSON lines carry the exception as text (the console renderer formats it itself)
                *([structlog.processors.format_exc_info] if _config["fmt"] == "json" else []),
                # the rendered line is scrubbed of every secret value this process resolved: this
                # also covers what the renderer adds itself (an exception's text, a traceback)
                scrubbing_renderer(renderer),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, _config["level"].upper())),
            logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
            cache_logger_on_first_use=False,
        )
    return structlog


def configure(fmt: str = "console", level: str = "warning") -> None:
    global _configured
    _config["fmt"], _config["level"] = fmt, level
    _configured = False
    if "structlog" in sys.modules:
        _structlog()


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


class _LazyLogger:
    """Forwards to a structlog logger, created on the first call at or above the configured level."""

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}

    def bind(self, **kw: Any) -> _LazyLogger:
        return _LazyLogger(self._name, {**self._context, **kw})

    def __getattr__(self, attr: str) -> Any:
        level = _LEVELS.get(attr)
        if level is not None and level < _LEVELS[_config["level"]]:
            return _noop
        log = _structlog().get_logger(self._name)
        if self._context:
            log = log.bind(**self._context)
        return getattr(log, attr)


def get(name: str) -> Any:
    return _LazyLogger(name)
