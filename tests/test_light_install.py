"""The light install: the base distribution (no chdb, numba, numpy, faust) is enough for the
operator client, `poa keys`, `poa emit`; commands that need the worker extra say so in one
line. Checked by running them in a child process where the worker libraries cannot be
imported, and on the distribution's metadata. The installed packages live under one
namespace (poa_stream.*)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from poa_stream.cli import WORKER_MODULES

ROOT = Path(__file__).resolve().parent.parent
BLOCK = "import sys\nfor m in %r:\n    sys.modules[m] = None\n" % sorted(WORKER_MODULES)


def run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code, *args], capture_output=True, text=True, timeout=120)


def test_base_dependencies_are_light_and_the_namespace_is_one():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    base = {d.split("=")[0].split("<")[0].split(">")[0].strip().lower() for d in meta["project"]["dependencies"]}
    heavy = {"chdb", "numba", "numpy", "faust-streaming", "clickhouse-connect", "pyarrow"}
    assert not base & heavy and "kafka-python" in base and "aiokafka" in base
    worker = " ".join(meta["project"]["optional-dependencies"]["worker"])
    assert all(h in worker for h in ("chdb", "numba", "numpy", "faust-streaming"))
    setup = meta["tool"]["setuptools"]
    assert all(p == "poa_stream" or p.startswith("poa_stream.") for p in setup["packages"])
    assert set(setup["package-dir"].values()) == {"poa", "streams", "processors", "attribution", "sinks"}
    assert meta["project"]["scripts"]["poa"] == "poa_stream.cli:main"


def test_client_and_keys_without_the_worker_libraries(tmp_path):
    code = ("from poa_stream.client import Client, load_key, new_key\n"
            "from poa_stream.cli import main\n"
            "path = sys.argv[1]\n"
            "sys.argv = ['poa', 'keys', 'new', '--account', 'op', '--out', path]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(load_key(path)[0])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in %r and sys.modules[m] is not None))\n"
            % sorted(WORKER_MODULES))
    out = run(code, str(tmp_path / "op.key"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["op", "[]"]


def test_worker_commands_say_what_to_install():
    out = run("from poa_stream.cli import main\nsys.argv = ['poa', 'replay', sys.argv[1], '--store', '/tmp/x']\nmain()\n",
              str(ROOT / "pyproject.toml"))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "pip install 'poa-stream[worker]'" in out.stderr, out.stderr


@pytest.mark.kafka
def test_client_delivers_without_the_worker_libraries(kafka_bootstrap):
    code = ("from poa_stream.client import Client\n"
            "with Client(sys.argv[1], timeout_s=10) as c:\n"
            "    d = c.usage(model_id='m-light', fee=3, output='light install', request_id='r-light')\n"
            "print(d.topic, d.offset >= 0)\n")
    out = run(code, kafka_bootstrap)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["poa.usage", "True"]
