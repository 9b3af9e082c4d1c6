"""Topic names of the PoA Stream contract and their partition counts."""
from __future__ import annotations

CONTRIBUTIONS = "poa.contributions"
VALIDATIONS = "poa.validations"
MODELS = "poa.models"
USAGE = "poa.usage"
REWARDS = "poa.rewards"
FLAGS = "poa.flags"
DEADLETTER = "poa.deadletter"

INPUT_TOPICS: tuple[str, ...] = (CONTRIBUTIONS, VALIDATIONS, MODELS, USAGE)
OUTPUT_TOPICS: tuple[str, ...] = (REWARDS, FLAGS, DEADLETTER)
ALL_TOPICS: tuple[str, ...] = INPUT_TOPICS + OUTPUT_TOPICS

TOPIC_OF_TYPE: dict[str, str] = {
    "contribution": CONTRIBUTIONS,
    "validation": VALIDATIONS,
    "model": MODELS,
    "usage": USAGE,
}


def partitions_for(topic: str, default_partitions: int) -> int:
    """Explicit partition count per topic. Models are few and ordered: one partition."""
    return 1 if topic == MODELS else default_partitions
