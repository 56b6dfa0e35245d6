"""Where manifests come from when the orchestrator runs continuously: file watch and GitOps."""
