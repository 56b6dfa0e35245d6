"""Interop: bring Compose files in, hand stacks to Kubernetes.

Compose in (``interop.compose``): ``convert(path, env, profiles=()) -> ConvertResult(manifest, warnings)``
turns a ``compose.yaml`` into our Stack manifest (a dict to dump as YAML) and a warning, with
``file:line:col``, for every key it did not carry over; ``is_compose(doc)`` recognises a Compose file by
shape. Helpers: ``yamlsource`` (positions, duplicate keys), ``interpolate`` (``${VAR:-default}``,
``.env``), ``compose_units`` (ports, volumes, durations, sizes), ``compose_service`` /
``compose_resources`` / ``compose_mounts`` (one handler per Compose key).

Kubernetes out (``interop.kubernetes``): ``export(stackset) -> ExportResult(documents, report)`` with
``dump``/``dump_stream`` for byte-stable YAML; ``kubernetes_pod`` builds containers and pod settings,
``kubernetes_storage`` volumes, ConfigMaps and Secrets; ``fidelity`` is the report of how each field
mapped (exact, approximated, not mappable), printable as text or JSON.

Nothing here writes files (Compose input, ``.env``, ``env_file`` and config files are read): the CLI
verbs that write the results are in ``cli.interop_cmds``.
"""
