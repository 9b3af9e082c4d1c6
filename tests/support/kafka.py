"""Where the tests find the local broker that scripts/test.sh starts."""
from __future__ import annotations

import os
from pathlib import Path

from poa_stream.settings import Settings


def local_kafka_settings() -> Settings:
    """The settings scripts/test.sh starts its broker with (POA_HOME, POA_KAFKA_LOCAL_PORT)."""
    return Settings(home=Path(os.environ.get("POA_HOME", ".poa/test")).resolve(),
                    kafka_local_port=int(os.environ.get("POA_KAFKA_LOCAL_PORT", 19192)),
                    kafka_local_controller_port=int(os.environ.get("POA_KAFKA_LOCAL_CONTROLLER_PORT", 19193)))
