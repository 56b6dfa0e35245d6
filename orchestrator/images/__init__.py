"""The content-addressed image store: archive import, safe layer extraction, overlay mounts."""
