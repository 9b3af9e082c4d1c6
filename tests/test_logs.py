"""poa/logs.py: the worker's logging configuration."""
from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from poa_stream.logs import LIBRARIES, logging_config


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    names = [*LIBRARIES, "kafka.coordinator.consumer", "poa", "poa.worker"]
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in names})
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for n, lvl in saved[2].items():
        logging.getLogger(n).setLevel(lvl)


def capture(level: str, fmt: str):
    cfg = logging_config(level, fmt)
    stream = io.StringIO()
    cfg["handlers"]["default"] = {"class": "logging.StreamHandler", "stream": stream, "formatter": fmt}
    logging.config.dictConfig(cfg)
    return stream


def test_json_lines_with_exception():
    stream = capture("info", "json")
    logging.getLogger("poa.worker").info("assigned %d partitions", 3)
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("poa.worker").exception("boom")
    a, b = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert a["message"] == "assigned 3 partitions" and a["level"] == "INFO" and a["logger"] == "poa.worker"
    assert a["ts"].endswith("+00:00") and isinstance(a["pid"], int)
    assert b["level"] == "ERROR" and "ZeroDivisionError" in b["exc"]


def test_libraries_stay_at_warning_unless_debug():
    stream = capture("info", "text")
    logging.getLogger("aiokafka.conn").info("chatter")
    logging.getLogger("faust.worker").warning("worth seeing")
    logging.getLogger("poa.worker").info("ours")
    out = stream.getvalue()
    assert "chatter" not in out and "worth seeing" in out and "poa.worker: ours" in out
    stream = capture("debug", "text")
    logging.getLogger("aiokafka.conn").debug("chatter")
    assert "chatter" in stream.getvalue()


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="log format"):
        logging_config("info", "xml")
    with pytest.raises(ValueError, match="log level"):
        logging_config("loud", "text")
