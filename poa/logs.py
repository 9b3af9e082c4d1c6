"""Worker logging: one configuration for our loggers and the libraries', text or JSON.

``logging_config(level, fmt)`` is a ``logging.config.dictConfig`` dict, used before the
Faust worker starts and handed to it (mode would otherwise replace it with its own):

- ``level`` applies to PoA Stream's loggers (``poa.*``); the libraries' (kafka, aiokafka,
  faust, mode) stay at WARNING unless ``level`` is DEBUG, so the default INFO shows the
  worker's own lifecycle (start, restore, assignment, recovery, stop) without their chatter;
- ``fmt`` ``text``: ``[time] [pid] [LEVEL] logger: message``; ``json``: one object per line
  with ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``pid``, ``message`` and ``exc``
  (the traceback, when there is one), for log shippers.

Settings: ``POA_LOG_LEVEL`` (``poa worker --loglevel``), ``POA_LOG_FORMAT``.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

LIBRARIES = ("kafka", "aiokafka", "faust", "mode", "urllib3", "numba")
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "pid": record.process,
               "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    n = logging.getLevelName(level.upper())
    if not isinstance(n, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning, error or critical")
    return n


def logging_config(level: str | int = "info", fmt: str = "text") -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use text or json")
    lvl = level_number(level)
    lib = lvl if lvl <= logging.DEBUG else max(lvl, logging.WARNING)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"text": {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"},
                       "json": {"()": JsonFormatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                 "formatter": fmt}},
        "root": {"level": lvl, "handlers": ["default"]},
        "loggers": {**{name: {"level": lib} for name in LIBRARIES},
                    # kafka-python warns on every group-less consumer (the outbox's mark reader)
                    "kafka.coordinator.consumer": {"level": max(lib, logging.ERROR)}},
    }


def configure(level: str | int = "info", fmt: str = "text") -> dict:
    """Apply ``logging_config`` now; returns it (a copy goes to the Faust worker)."""
    import logging.config
    cfg = logging_config(level, fmt)
    logging.config.dictConfig(cfg)
    return cfg
