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


def sequence_topic(group: str) -> str:
    """The scaled topology's internal topic (processors/scaled.py): the input forwarded by the
    intake stage, one partition (one sequence owner). Named after the consumer group, so two
    deployments on one cluster never share it."""
    return f"{group}.sequence"


def partitions_for(topic: str, default_partitions: int) -> int:
    """Explicit partition count per topic. Models are few and ordered: one partition."""
    return 1 if topic == MODELS or topic.endswith(".sequence") else default_partitions
