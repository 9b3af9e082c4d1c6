"""docker-compose.yml: it parses, and every service's settings are ones the code reads."""
from pathlib import Path
import re
import xml.etree.ElementTree as ET

import yaml

from poa.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_present():
    services = compose()["services"]
    assert {"kafka", "clickhouse", "grafana", "worker", "producer"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_worker_environment_matches_settings():
    fields = {f"POA_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker", "producer"):
        env = compose()["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("POA_")} - fields
        assert not unknown, f"{name} sets variables the code never reads: {unknown}"
    worker = compose()["services"]["worker"]["environment"]
    s = Settings(**{k[4:].lower(): v for k, v in worker.items()
                    if k.startswith("POA_") and "${" not in str(v)})
    assert s.store_engine == "http" and s.bootstrap == "kafka:9092"


def test_commands_exist_in_cli():
    from typer.main import get_command

    from poa.cli import app
    commands = set(get_command(app).commands)
    for name in ("worker", "producer"):
        cmd = compose()["services"][name]["command"]
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
