"""``python -m orchestrator``: the same entry point as the ``orchestrator`` console script."""

from orchestrator.cli import main

raise SystemExit(main())
