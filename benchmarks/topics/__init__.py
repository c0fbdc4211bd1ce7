"""The benchmark topics, in the order they run and print.

Each name is a module of this package that defines ``TOPIC`` (a
``benchmarks.harness.Topic``); the name is what ``--cases`` selects. To add
a topic, write its module and add its name here, one line.
"""

from __future__ import annotations

import importlib

from benchmarks.harness import Topic

TOPIC_MODULES = (
    "rowwise",
    "small",
    "training",
    "compiled",
    "pairwise",
    "topk",
    "search",
    "contrastive",
    "training_memory",
)


def all_topics() -> list[Topic]:
    """The ``TOPIC`` of every module in ``TOPIC_MODULES``."""
    topics = []
    for module in TOPIC_MODULES:
        topic: Topic = importlib.import_module(f"{__name__}.{module}").TOPIC
        topics.append(topic)
    return topics
