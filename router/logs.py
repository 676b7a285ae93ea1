"""Structured logs: one JSON object per line on stderr, an `event` name first."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

logger = logging.getLogger("router")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname.lower(),
                                 "event": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: int = logging.INFO) -> None:
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event. Callers pass names and counts, never keys, tokens or request bodies."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def now_ms() -> int:
    return int(time.time() * 1000)
