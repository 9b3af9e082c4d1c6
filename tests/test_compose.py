"""docker-compose.yml and deploy/, checked without a Docker engine (none runs here):
the listeners a host client receives, the ClickHouse user files beside what the official
entrypoint writes, the Grafana provisioning against the ClickHouse plugin's config schema,
pins, healthchecks and start order, and the worker run as the image runs it (a non-root
user, a read-only working directory, POA_HOME set) against a real broker and store."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import re

import pytest
import yaml

from poa_stream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {"topics", "producer"}


def env_of(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


def published(service: str) -> dict[int, int]:
    """container port -> host port of ``ports`` entries ("[ip:]host:container")."""
    out = {}
    for spec in SERVICES[service].get("ports", []):
        parts = str(spec).split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


def listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, rest = item.split("://")
        host, port = rest.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


def test_a_host_client_receives_an_address_it_can_reach():
    env = env_of("kafka")
    bound, advertised = listeners(env["KAFKA_LISTENERS"]), listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    ports = published("kafka")
    assert ports, "the broker publishes a port to the host"
    for container_port, host_port in ports.items():
        name = next(n for n, (_, p) in bound.items() if p == container_port)
        host, port = advertised[name]
        # a client that bootstraps at localhost:<host port> is told to use this address
        assert port == host_port, (name, advertised[name])
        socket.getaddrinfo(host, port)  # resolvable on the host (not the compose service name)
    # clients inside the compose network use the service name; the controller is not advertised
    assert advertised["PLAINTEXT"] == ("kafka", 9092) and "CONTROLLER" not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    protocol_map = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) == set(protocol_map)


def test_topics_exist_before_any_producer_and_kafka_keeps_its_data():
    assert env_of("kafka")["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert SERVICES["topics"]["command"] == ["poa", "topics", "create"]
    for svc in ("worker", "producer"):
        assert SERVICES[svc]["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    log_dir = env_of("kafka")["KAFKA_LOG_DIRS"]
    assert any(v.split(":")[1] == log_dir for v in SERVICES["kafka"]["volumes"])
    assert set(COMPOSE["volumes"]) >= {"kafka-data", "clickhouse-data"}


def test_images_pinned_healthchecks_everywhere_no_deprecated_plugin_install():
    for name, svc in SERVICES.items():
        if "image" in svc and "build" not in svc and svc["image"] != "poa-stream:local":
            image, _, tag = svc["image"].partition(":")
            assert tag and tag != "latest" and tag[0].isdigit(), name
        if name not in ONE_SHOT:
            assert "test" in svc.get("healthcheck", {}), f"{name} has no healthcheck"
    gf = env_of("grafana")
    assert "GF_INSTALL_PLUGINS" not in gf
    plugin, _, version = gf["GF_PLUGINS_PREINSTALL_SYNC"].partition("@")
    assert plugin == "grafana-clickhouse-datasource" and version.count(".") == 2
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignore and ".env" in ignore and ".git" in ignore


# What the official clickhouse/clickhouse-server entrypoint (docker/server/entrypoint.sh in
# ClickHouse/ClickHouse) writes to users.d/default-user.xml when CLICKHOUSE_USER or
# CLICKHOUSE_PASSWORD is set: the default user removed, the named one created.
def entrypoint_default_user(user: str, access_management: str) -> str:
    return (f"<clickhouse><users><default remove=\"remove\"></default><{user}><profile>default</profile>"
            f"<networks><ip>::/0</ip></networks><password>secret</password><quota>default</quota>"
            f"<access_management>{access_management}</access_management></{user}></users></clickhouse>")


def test_clickhouse_user_files_beside_what_the_entrypoint_writes(tmp_path):
    ch = SERVICES["clickhouse"]
    users_d = "/etc/clickhouse-server/users.d"
    mounts = [v.split(":") for v in ch["volumes"]]
    # the entrypoint writes into users.d: it must not be a (read-only) mount itself
    assert all(target.rstrip("/") != users_d for _, target, *_ in mounts)
    ours = [(ROOT / src, target) for src, target, *_ in mounts if target.startswith(users_d + "/")]
    assert ours and all(src.is_file() and target.endswith(".xml") for src, target in ours)
    env = env_of("clickhouse")
    user = env["CLICKHOUSE_USER"].split(":-")[-1].rstrip("}") if "${" in env["CLICKHOUSE_USER"] else env["CLICKHOUSE_USER"]
    folder = tmp_path / "users.d"
    folder.mkdir()
    (folder / "default-user.xml").write_text(entrypoint_default_user(user, env["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"]))
    for src, target in ours:
        assert Path(target).name != "default-user.xml"  # the entrypoint would overwrite it
        shutil.copy(src, folder / Path(target).name)
    users: dict[str, str] = {}
    profiles = {"default", "readonly"}  # the server's stock users.xml
    for f in sorted(folder.iterdir()):
        root = ET.parse(f).getroot()
        assert root.tag == "clickhouse"
        for p in root.findall("profiles/*"):
            profiles.add(p.tag)
        for u in root.findall("users/*"):
            if u.get("remove"):
                continue
            assert u.tag not in users, f"user {u.tag} defined in {users.get(u.tag)} and {f.name}"
            users[u.tag] = f.name
            pw = u.find("password")
            if pw is not None and pw.get("from_env"):
                assert pw.get("from_env") in env, f"{pw.get('from_env')} not set in the clickhouse service"
            grants = [g.text for g in u.findall("grants/query")]
            assert all(f"ON {env['CLICKHOUSE_DB']}." in g for g in grants)
    for f in folder.iterdir():
        for u in ET.parse(f).getroot().findall("users/*"):
            prof = u.find("profile")
            assert prof is None or prof.text in profiles, (u.tag, prof.text)
    assert {user, "grafana"} <= set(users)


# The ClickHouse plugin's datasource settings (CHConfig and CHSecureConfig in
# grafana/clickhouse-datasource src/types/config.ts).
CH_CONFIG_KEYS = {"version", "host", "port", "protocol", "secure", "path", "tlsSkipVerify", "tlsAuth",
                  "tlsAuthWithCACert", "username", "defaultDatabase", "defaultTable", "dialTimeout",
                  "queryTimeout", "validateSql", "logs", "traces", "customSettings", "enableSecureSocksProxy"}
CH_CONFIG_REQUIRED = {"host", "port", "protocol", "username"}
CH_SECURE_KEYS = {"password", "tlsCACert", "tlsClientCert", "tlsClientKey"}


def test_grafana_provisioning_matches_the_plugin_schema_and_the_stack():
    prov = ROOT / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "clickhouse.yaml").read_text())["datasources"]
    assert len(ds) == 1
    d = ds[0]
    plugin = env_of("grafana")["GF_PLUGINS_PREINSTALL_SYNC"].partition("@")[0]
    assert d["type"] == plugin
    jd = d["jsonData"]
    assert set(jd) <= CH_CONFIG_KEYS and CH_CONFIG_REQUIRED <= set(jd)
    assert jd["protocol"] in ("http", "native") and isinstance(jd["port"], int)
    assert set(d.get("secureJsonData", {})) <= CH_SECURE_KEYS
    assert jd["host"] in SERVICES and jd["port"] in (8123, 9000)
    assert jd["username"] == "grafana" and jd["defaultDatabase"] == env_of("clickhouse")["CLICKHOUSE_DB"]
    secret = d["secureJsonData"]["password"]
    assert secret.startswith("$") and secret[1:] in env_of("grafana")  # from the environment, never a value
    boards = yaml.safe_load((prov / "dashboards" / "poa.yaml").read_text())["providers"][0]["options"]["path"]
    assert any(v.split(":")[1] == boards for v in SERVICES["grafana"]["volumes"])
    alerts = yaml.safe_load((prov / "alerting" / "poa-alerts.yaml").read_text())
    uids = {q["datasourceUid"] for g in alerts["groups"] for r in g["rules"] for q in r["data"]}
    assert uids == {d["uid"], "__expr__"}


def test_dockerfile_runs_unprivileged_and_warms_the_installed_package():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] != "root"
    assert "NUMBA_CACHE_DIR" in text and "POA_HOME" in text
    warm = next(ln for ln in lines if "warmup" in ln)
    assert "cd /" in warm  # not /app: the installed package is what runs
    assert lines[-1].startswith("CMD") and "poa" in lines[-1]


def world_executable(path: Path) -> bool:
    """Every directory above ``path`` is searchable and ``path`` executable by anyone."""
    return all(os.stat(p).st_mode & 0o001 for p in [*path.parents, path])


def world_readable_tree(root: Path) -> bool:
    return all(os.stat(p).st_mode & 0o005 == 0o005 for p in [*root.parents, root])


def readonly_mounts_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tempfile.mkdtemp(prefix="poa-ro-")
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && ! touch "$0/x"', probe],
                           capture_output=True)
        return r.returncode == 0 and not os.path.exists(os.path.join(probe, "x"))
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@pytest.mark.kafka
def test_worker_as_the_image_runs_it(kafka_bootstrap, ch_http, database):
    """Non-root user, read-only working directory, POA_HOME and NUMBA_CACHE_DIR set, the
    http store as in compose: it processes events and writes nothing in its working directory."""
    from support.events_factory import scenario

    from poa_stream.kafka_local import reset_topics
    from poa_stream.streams.producer import produce_records
    reset_topics(kafka_bootstrap, 3)
    base = Path(tempfile.mkdtemp(prefix="poa-image-"))
    cwd, home, numba = base / "app", base / "home", base / "numba"
    for d in (cwd, home, numba):
        d.mkdir()
    (cwd / "README").write_text("read-only working directory\n")
    os.chmod(base, 0o755)
    os.chmod(cwd, 0o555)
    cmd = [sys.executable, "-m", "poa_stream.cli", "worker"]
    user = None
    if os.geteuid() == 0:
        if world_executable(Path(sys.executable).resolve()) and world_readable_tree(ROOT):
            user = 65534  # nobody, as the image's `poa` user: cwd 0555 is then read-only for it
            for d in (home, numba):
                os.chown(d, 65534, 65534)
        elif readonly_mounts_work():  # root ignores 0555: make the directory read-only for real
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && cd "$0" && exec "$@"',
                   str(cwd), *cmd]
    before = sorted(p.name for p in cwd.iterdir())
    env = {k: v for k, v in os.environ.items() if not k.startswith("POA_")}
    env.update(POA_HOME=str(home), NUMBA_CACHE_DIR=str(numba), POA_KAFKA_BOOTSTRAP=kafka_bootstrap,
               POA_STORE_ENGINE="http", POA_CLICKHOUSE_URL=f"http://127.0.0.1:{ch_http.port}",
               POA_CLICKHOUSE_DATABASE=database, POA_WORKER_ID="poa-test-" + uuid.uuid4().hex[:8],
               POA_METRICS_PORT="0", HOME=str(home), POA_LOG_FORMAT="json")
    log = open(base / "worker.log", "wb")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            user=user, group=user, extra_groups=[] if user is not None else None)
    try:
        produce_records(kafka_bootstrap, scenario())
        status = home / "worker-status.json"
        deadline = time.monotonic() + 240
        while True:
            st = json.loads(status.read_text()) if status.exists() else {}
            if st.get("processed", 0) > 0 and st.get("buffered") == 0 and st.get("ops_url"):
                break
            assert proc.poll() is None, (base / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (base / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        ready = urllib.request.urlopen(st["ops_url"] + "/ready", timeout=10)
        assert ready.status == 200
    finally:
        proc.terminate()
        rc = proc.wait(60)
        log.close()
    text = (base / "worker.log").read_text()
    assert rc == 0, text[-3000:]
    assert sorted(p.name for p in cwd.iterdir()) == before  # nothing written where it runs
    assert (home / "worker-data").is_dir()  # Faust's data folder went under POA_HOME
    records = [json.loads(line) for line in text.splitlines() if line.strip()]  # JSON logs: one object a line
    assert all(r["level"] in ("INFO", "WARNING") for r in records), text[-3000:]
    messages = [r["message"] for r in records]
    assert any(m.startswith("assigned ") for m in messages) and any(m.startswith("stopping: seq") for m in messages)
    assert "Traceback" not in text
    shutil.rmtree(base, ignore_errors=True)


# ---- the services' settings and commands are ones the code reads
def test_services_present():
    services = SERVICES
    assert {"kafka", "clickhouse", "grafana", "topics", "worker", "producer"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_worker_environment_matches_settings():
    fields = {f"POA_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker", "producer", "topics"):
        env = SERVICES[name]["environment"]
        unknown = {k for k in env if k.startswith("POA_")} - fields
        assert not unknown, f"{name} sets variables the code never reads: {unknown}"
    worker = SERVICES["worker"]["environment"]
    s = Settings(**{k[4:].lower(): v for k, v in worker.items()
                    if k.startswith("POA_") and "${" not in str(v)})
    assert s.store_engine == "http" and s.bootstrap == "kafka:9092"


def test_commands_exist_in_cli():
    from typer.main import get_command

    from poa_stream.cli import app
    commands = set(get_command(app).commands)
    for name in ("worker", "producer", "topics"):
        cmd = SERVICES[name]["command"]
        assert cmd[0] == "poa" and cmd[1] in commands


def test_no_secret_literals_and_reader_is_read_only():
    text = (ROOT / "docker-compose.yml").read_text()
    for m in re.finditer(r"(PASSWORD[A-Z_]*):\s*(\S+)", text):
        assert m.group(2).startswith("${"), f"{m.group(1)} must come from the environment"
    users = ET.parse(ROOT / "deploy/clickhouse/users.d/grafana-reader.xml").getroot()
    assert users.find("profiles/grafana_readonly/readonly").text == "1"
    assert users.find("profiles/grafana_readonly/constraints/max_execution_time/changeable_in_readonly") is not None
    assert users.find("users/grafana/password").get("from_env") == "GRAFANA_READER_PASSWORD"
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text())
    d = ds["datasources"][0]
    assert d["type"] == "grafana-clickhouse-datasource"
    assert d["jsonData"]["username"] == "grafana" and d["jsonData"]["protocol"] == "http"
    assert d["secureJsonData"]["password"] == "$GRAFANA_READER_PASSWORD"


def test_dockerfile_copies_every_package():
    text = (ROOT / "deploy/Dockerfile").read_text()
    for pkg in ("poa", "streams", "processors", "attribution", "sinks", "deploy"):
        assert f"COPY {pkg} ./{pkg}" in text
