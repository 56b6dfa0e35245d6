"""Runtime backends behind one protocol (``base``): native Linux (``linux``), runc, a fake; and
``oci``, the pure service -> OCI runtime-spec translation."""
