"""orchestrator: a declarative container orchestrator for one Linux host (see README.md)."""
