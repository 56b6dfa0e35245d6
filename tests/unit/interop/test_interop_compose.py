"""Compose -> Stack manifest: the realistic fixtures, key by key, and the warnings with file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import manifest
from orchestrator.errors import ManifestError
from orchestrator.interop.compose import (
    ConvertResult,
    convert,
    convert_text,
    is_compose,
    is_compose_file,
    load_stackset,
)
from orchestrator.manifest.model import StackSet

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "compose"


def _convert(text: str, tmp_path: Path, env: dict[str, str] | None = None,
             profiles: tuple[str, ...] = ()) -> ConvertResult:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    # a fixed project name: the tmp directory's name would be renamed (with a warning) otherwise
    return convert(path, {"COMPOSE_PROJECT_NAME": "test", **(env or {})}, profiles=profiles)


def _service(text: str, tmp_path: Path, name: str = "app", **kw: Any) -> dict[str, Any]:
    service: dict[str, Any] = _convert(text, tmp_path, **kw).manifest["spec"]["services"][name]
    return service


def _load(result: ConvertResult) -> StackSet:
    """Our own loader (schema, convert, checks) must accept every converted manifest."""
    return manifest.load_text(yaml.safe_dump(result.manifest, sort_keys=False), "converted.yaml")


def test_is_compose_by_shape() -> None:
    assert is_compose({"services": {}})
    assert not is_compose({"apiVersion": "orchestrator/v1", "kind": "Stack", "services": {}})
    assert not is_compose({"version": "3"})
    assert not is_compose(["services"])


def test_webapp_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    result = convert(FIXTURES / "webapp" / "compose.yaml", {"WEB_TAG": "2.0"})
    m = result.manifest
    assert m["apiVersion"] == "orchestrator/v1" and m["kind"] == "Stack"
    assert m["metadata"]["name"] == "shop"
    web, db, cache = (m["spec"]["services"][n] for n in ("web", "db", "cache"))
    assert web["image"] == "registry.local/shop/web:2.0"          # environment wins over .env
    assert web["command"][-2:] == ["4", "shop.wsgi"]               # WEB_WORKERS from .env (export ...)
    assert web["env"]["DATABASE_URL"] == "postgres://shop:s3cret@db:5432/shop"
    assert web["dependsOn"] == {"cache": "started", "db": "healthy"}
    assert web["healthcheck"] == {"exec": ["wget", "-q", "-O-", "http://localhost:8000/health"],
                                  "interval": "10s", "timeout": "3s", "retries": 3, "startPeriod": "20s"}
    assert web["restart"] == {"policy": "always"}                  # unless-stopped, via the x- anchor
    assert web["labels"] == {"com.example.team": "web"}
    assert web["security"] == {"readOnlyRootfs": True}
    assert web["network"] == {"networks": ["back", "front"]}
    assert web["ports"] == ["8080:8000/tcp"]
    assert {"type": "tmpfs", "target": "/tmp"} in web["volumes"]
    assert db["env"]["POSTGRES_PASSWORD"] == "s3cret"
    assert db["resources"] == {"memory": "512Mi"}
    assert db["volumes"][1] == {"type": "bind", "source": str(FIXTURES / "webapp" / "initdb"),
                                "target": "/docker-entrypoint-initdb.d", "readOnly": True}
    assert db["healthcheck"]["exec"] == ["/bin/sh", "-c", "pg_isready -U shop -d shop"]
    assert cache["restart"] == {"policy": "never"}                 # a quoted "no"
    assert cache["command"][2] == ""
    assert cache["healthcheck"] == {"exec": ["/bin/sh", "-c", "redis-cli ping"], "interval": "90s"}
    assert m["spec"]["networks"] == {"front": {}, "back": {"internal": True, "subnet": "10.89.1.0/24"}}
    assert m["spec"]["volumes"] == {"db-data": {}}
    warnings = [str(w) for w in result.warnings]
    path = str(FIXTURES / "webapp" / "compose.yaml")
    assert f"{path}:52:5: services.db.shm_size: unsupported key 'shm_size' ignored" in warnings
    assert any("unless-stopped" in w for w in warnings)
    stacks = _load(result)
    assert [s.name for s in stacks.stack("shop").services] == ["cache", "db", "web"]


def test_webapp_requires_password() -> None:
    text = (FIXTURES / "webapp" / "compose.yaml").read_text()
    with pytest.raises(ManifestError) as exc:
        convert_text(text, "compose.yaml", Path("/nonexistent"), {})
    assert any(p.line == 15 and "DB_PASSWORD" in p.message and "set DB_PASSWORD in .env" in p.message
               for p in exc.value.problems)


def test_workers_fixture() -> None:
    result = convert(FIXTURES / "workers" / "compose.yaml", {})
    spec = result.manifest["spec"]
    assert sorted(spec["services"]) == ["broker", "worker"]        # profiles cron/debug inactive
    w = spec["services"]["worker"]
    assert w["replicas"] == 4
    assert w["resources"] == {"cpus": 0.5, "memory": "256Mi", "pids": 128, "memoryReservation": "128Mi"}
    assert w["update"] == {"parallelism": 2, "order": "start-first", "failureAction": "rollback",
                           "monitor": "30s"}
    assert w["restart"] == {"policy": "on-failure", "maxRetries": 5}
    assert w["entrypoint"] == ["/usr/bin/tini", "--"]
    assert w["user"] == "1000:1000" and w["workingDir"] == "/app"
    assert w["env"] == {"LOG_LEVEL": "info", "CONCURRENCY": "8", "GREETING": "hello world",
                        "LITERAL": "${NOT_EXPANDED}", "BROKER_URL": "amqp://broker:5672"}
    assert w["security"]["capabilities"] == {"drop": ["ALL"], "add": ["CAP_NET_BIND_SERVICE"]}
    assert w["security"]["noNewPrivileges"] is True
    assert w["security"]["seccomp"] == str(FIXTURES / "workers" / "seccomp" / "worker.json")
    assert w["security"]["sysctls"] == {"net.core.somaxconn": "1024"}
    assert w["stopSignal"] == "SIGINT"
    b = spec["services"]["broker"]
    assert b["ports"] == ["127.0.0.1:5672:5672/tcp", "15672:15672/tcp"]
    assert b["ulimits"] == {"nofile": {"soft": 65536, "hard": 65536}, "nproc": {"soft": 4096, "hard": 4096}}
    assert b["stopGracePeriod"] == "60s"
    assert spec["volumes"] == {"broker-data": {"labels": {"backup": "daily"}}}
    assert result.warnings == []
    _load(result)


def test_workers_profiles_and_env() -> None:
    result = convert(FIXTURES / "workers" / "compose.yaml", {"WORKERS": "7", "COMPOSE_PROFILES": "debug"},
                     profiles=["cron"])
    services = result.manifest["spec"]["services"]
    assert sorted(services) == ["broker", "debug-shell", "scheduler", "worker"]
    assert services["worker"]["replicas"] == 7
    assert services["scheduler"]["command"][-2:] == ["--tick", "5 seconds"]   # shlex keeps quotes


def test_unsupported_fixture_warns_with_lines() -> None:
    path = FIXTURES / "unsupported" / "compose.yaml"
    result = convert(path, {})
    got = {(w.line, w.path) for w in result.warnings}
    expected = {(1, "version"), (5, "services.app.build"), (7, "services.app.container_name"),
                (8, "services.app.privileged"), (9, "services.app.logging"),
                (11, "services.app.extra_hosts"), (13, "services.app.dns"),
                (15, "services.app.security_opt[0]"), (17, "services.app.deploy.mode"),
                (18, "services.app.deploy.placement"),
                (22, "services.app.deploy.resources.reservations.cpus"),
                (23, "services.app.deploy.resources.reservations.devices"),
                (26, "services.app.blkio_config.weight_device"), (29, "services.app.pids_limit"),
                (31, "services.app.ports[0]"), (34, "services.app.networks.appnet.aliases"),
                (35, "services.app.init"), (39, "networks.appnet.driver"), (40, "networks.appnet.attachable"),
                (43, "volumes.cache.external"), (45, "secrets.token"), (46, "secrets.token.external"),
                (47, "include")}
    assert got == expected
    assert all(w.file == str(path) for w in result.warnings)
    assert "x-custom" not in str(result.warnings)                   # extension fields are the user's
    _load(result)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as exc:
        _convert("services:\n  app:\n    image: a\n    image: b\n", tmp_path)
    assert exc.value.problems[0].line == 4


def test_restart_variants(tmp_path: Path) -> None:
    def restart(value: str) -> Any:
        return _service(f"services:\n  app:\n    image: x\n    restart: {value}\n", tmp_path)["restart"]
    assert restart("no") == {"policy": "never"}                   # YAML 1.1 reads a bare no as false
    assert restart("always") == {"policy": "always"}
    assert restart("on-failure") == {"policy": "on-failure"}
    assert restart("on-failure:3") == {"policy": "on-failure", "maxRetries": 3}
    assert restart("unless-stopped") == {"policy": "always"}
    with pytest.raises(ManifestError):
        restart("sometimes")


def test_healthcheck_variants(tmp_path: Path) -> None:
    def hc(body: str) -> Any:
        svc = _service(f"services:\n  app:\n    image: x\n    healthcheck:\n{body}", tmp_path)
        return svc.get("healthcheck")
    assert hc("      test: ['CMD', 'true']\n      interval: 500ms\n") == {"exec": ["true"],
                                                                      "interval": "500ms"}
    assert hc("      test: ['NONE']\n") is None
    assert hc("      disable: true\n") is None
    assert hc("      test: curl -f localhost\n") == {"exec": ["/bin/sh", "-c", "curl -f localhost"]}
    with pytest.raises(ManifestError):
        hc("      test: ['CMD']\n")


def test_command_and_environment_forms(tmp_path: Path) -> None:
    svc = _service("services:\n  app:\n    image: x\n    command: sh -c 'echo \"a b\"'\n"
                   "    entrypoint: /init\n    environment: [A=1, B, C=]\n", tmp_path, env={"B": "from-env"})
    assert svc["command"] == ["sh", "-c", 'echo "a b"']
    assert svc["entrypoint"] == ["/init"]
    assert svc["env"] == {"A": "1", "B": "from-env", "C": ""}


def test_volumes_long_and_anonymous(tmp_path: Path) -> None:
    text = """services:
  app:
    image: x
    volumes:
      - /scratch
      - type: tmpfs
        target: /run
        tmpfs: {size: 64m, mode: 1777}
      - type: bind
        source: ./data
        target: /data
        read_only: true
      - type: volume
        source: logs
        target: /logs
        volume: {nocopy: true}
volumes:
  logs: {}
"""
    result = _convert(text, tmp_path)
    vols = result.manifest["spec"]["services"]["app"]["volumes"]
    assert vols[0] == {"type": "volume", "source": "app-anon-0", "target": "/scratch"}
    assert vols[1] == {"type": "tmpfs", "target": "/run", "tmpfs": {"size": "64Mi", "mode": "01777"}}
    assert vols[2] == {"type": "bind", "source": str(tmp_path / "data"), "target": "/data", "readOnly": True}
    assert result.manifest["spec"]["volumes"] == {"logs": {}, "app-anon-0": {}}
    assert {w.path for w in result.warnings} == {"services.app.volumes[0]", "services.app.volumes[3].volume"}
    _load(result)


def test_legacy_resources_and_conflicts(tmp_path: Path) -> None:
    text = """services:
  app:
    image: x
    cpus: 1.5
    cpu_shares: 512
    cpuset: "0-1"
    mem_limit: 1g
    memswap_limit: 2g
    mem_reservation: 256m
    pids_limit: 200
    blkio_config:
      weight: 300
      device_read_bps: [{path: /dev/sda, rate: 12mb}]
      device_write_iops: [{path: /dev/sda, rate: 100}]
    deploy:
      resources:
        limits: {memory: 512m}
    ipc: host
    oom_score_adj: 100
"""
    result = _convert(text, tmp_path)
    svc = result.manifest["spec"]["services"]["app"]
    assert svc["resources"] == {
        "cpus": 1.5, "cpuShares": 512, "cpuset": "0-1", "memory": "512Mi", "memorySwap": "2Gi",
        "memoryReservation": "256Mi", "pids": 200,
        "blkio": {"weight": 300, "readBps": [{"device": "/dev/sda", "rate": "12Mi"}],
                  "writeIops": [{"device": "/dev/sda", "rate": 100}]}}
    assert svc["namespaces"] == {"ipc": "host"} and svc["oomScoreAdj"] == 100
    assert [w.line for w in result.warnings] == [17]             # deploy memory differs from mem_limit
    _load(result)


def test_network_mode_and_depends_on_list(tmp_path: Path) -> None:
    text = ("services:\n  a:\n    image: x\n    network_mode: service:b\n    depends_on: [b]\n"
            "  b:\n    image: x\n    network_mode: host\n")
    services = _convert(text, tmp_path).manifest["spec"]["services"]
    assert services["a"]["network"] == "container:b" and services["a"]["dependsOn"] == {"b": "started"}
    assert services["b"]["network"] == "host"


def test_names_are_normalised_and_references_follow(tmp_path: Path) -> None:
    text = ("name: My_Project\nservices:\n  web_app:\n    image: x\n    depends_on:\n      db_main:\n"
            "        condition: service_completed_successfully\n  db_main:\n    image: y\n")
    result = _convert(text, tmp_path)
    assert result.manifest["metadata"]["name"] == "my-project"
    assert result.manifest["spec"]["services"]["web-app"]["dependsOn"] == {"db-main": "completed"}
    assert sum("renamed" in w.message for w in result.warnings) >= 3
    _load(result)


def test_configs_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("t0k3n")
    text = """services:
  app:
    image: x
    configs:
      - app_conf
      - source: motd
        target: /etc/motd
        mode: 0440
    secrets: [token, api_key]
configs:
  app_conf: {content: "a = 1\\n"}
  motd: {environment: MOTD}
secrets:
  token: {file: ./token.txt}
  api_key: {environment: API_KEY}
"""
    result = _convert(text, tmp_path, env={"MOTD": "hello"})
    spec = result.manifest["spec"]
    assert spec["services"]["app"]["configs"] == [{"source": "app_conf", "target": "/app_conf"},
                                                 {"source": "motd", "target": "/etc/motd", "mode": "0440"}]
    assert spec["services"]["app"]["secrets"] == [{"source": "token", "target": "/run/secrets/token"},
                                                 {"source": "api_key", "target": "/run/secrets/api_key"}]
    assert spec["configs"] == {"app_conf": {"content": "a = 1\n"}, "motd": {"content": "hello"}}
    assert spec["secrets"] == {"token": {"file": str(tmp_path / "token.txt")}, "api_key": {"env": "API_KEY"}}
    _load(result)


def test_missing_image_and_bad_types_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as exc:
        _convert("services:\n  app:\n    build: .\n    replicas: x\n    scale: many\n", tmp_path)
    messages = [p.message for p in exc.value.problems]
    assert any("has no 'image'" in m for m in messages) and any("expected an integer" in m for m in messages)


def test_env_file_missing_is_an_error_unless_optional(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read env file"):
        _convert("services:\n  app:\n    image: x\n    env_file: nope.env\n", tmp_path)
    svc = _service("services:\n  app:\n    image: x\n    env_file:\n      - path: nope.env\n"
                   "        required: false\n", tmp_path)
    assert "env" not in svc or svc["env"] == {}


def test_tmpfs_short_options_and_bad_modes(tmp_path: Path) -> None:
    svc = _service("services:\n  app:\n    image: x\n    tmpfs: ['/run:size=64m,mode=1770', '/x:uid=1']\n",
                   tmp_path)
    assert svc["volumes"] == [{"type": "tmpfs", "target": "/run", "tmpfs": {"size": "64Mi", "mode": "01770"}},
                              {"type": "tmpfs", "target": "/x"}]
    with pytest.raises(ManifestError, match="octal mode"):
        _convert("services:\n  app:\n    image: x\n    configs: [{source: c, mode: rw}]\n"
                 "configs:\n  c: {content: x}\n", tmp_path)


def test_compose_default_restart_is_kept(tmp_path: Path) -> None:
    assert _service("services:\n  app:\n    image: x\n", tmp_path)["restart"] == {"policy": "never"}


def test_gateway_fixture() -> None:
    base = FIXTURES / "gateway"
    result = convert(base / "compose.yaml", {})
    spec = result.manifest["spec"]
    proxy, api, exporter = (spec["services"][n] for n in ("proxy", "api", "node-exporter"))
    assert proxy["configs"] == [{"source": "nginx_conf", "target": "/etc/nginx/nginx.conf", "mode": "0444"}]
    assert proxy["secrets"] == [{"source": "tls_key", "target": "/etc/nginx/tls.key", "uid": 101, "gid": 101,
                                 "mode": "0400"}]
    assert proxy["volumes"] == [{"type": "tmpfs", "target": "/var/cache/nginx", "tmpfs": {"size": "32Mi"}},
                                {"type": "tmpfs", "target": "/run"}]
    assert api["secrets"] == [{"source": "api_token", "target": "/run/secrets/api_token"}]
    assert api["security"] == {"capabilities": {"drop": ["ALL"]}, "noNewPrivileges": True}
    assert exporter["network"] == "host" and exporter["namespaces"] == {"pid": "host"}
    assert spec["configs"] == {"nginx_conf": {"file": str(base / "nginx.conf")}}
    assert spec["secrets"] == {"tls_key": {"file": str(base / "tls.key")}, "api_token": {"env": "API_TOKEN"}}
    assert [(w.line, w.message) for w in result.warnings] == [(53, "volume options rslave ignored")]
    _load(result)


def test_is_compose_file_and_load_stackset(tmp_path: Path) -> None:
    assert is_compose_file(FIXTURES / "webapp" / "compose.yaml")
    ours = tmp_path / "stack.yaml"
    ours.write_text("apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {name: s}\nspec: {services: {}}\n")
    assert not is_compose_file(ours)
    assert not is_compose_file(tmp_path / "missing.yaml")
    stacks, warnings = load_stackset(FIXTURES / "webapp" / "compose.yaml", {})
    assert stacks.stack("shop").service("db").resources.memory == 512 * 1024**2
    assert len(warnings) == 2
    bad = tmp_path / "compose.yaml"
    bad.write_text("name: p\nservices:\n  a:\n    image: x\n    ports: ['80:80']\n"
                   "    deploy: {replicas: 2}\n")
    with pytest.raises(ManifestError) as exc:
        load_stackset(bad, {})
    problem = exc.value.problems[0]
    assert problem.file == str(bad) and problem.path.startswith("spec.services.a.ports")
    assert problem.message.endswith("(in the converted stack)")
