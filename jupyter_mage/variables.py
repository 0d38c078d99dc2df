"""kwargs: how a block's runtime variables are layered (contract section 3).

Only the JSON-able layers are built here; the kernel adds the live objects (``execution_date`` as
a ``datetime``, ``context``, ``logger``, ``retry``, ``block_uuid``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

DEFAULT_ENV = "prod"


def merge_variables(
    global_variables: dict[str, Any],
    trigger_variables: dict[str, Any],
    run_variables: dict[str, Any],
    event_variables: dict[str, Any],
) -> dict[str, Any]:
    """Shallow merge, later wins: pipeline < trigger < run; event keys only fill gaps.

    ``env`` is a user variable: it defaults to ``"prod"`` only when no layer sets it (Mage
    always forces ``"prod"``, which breaks its own ``env: staging`` example).
    """
    merged = {**global_variables, **trigger_variables, **run_variables}
    for key, value in event_variables.items():
        merged.setdefault(key, value)
    merged.setdefault("env", DEFAULT_ENV)
    return merged


def system_keys(
    *,
    run_id: int,
    pipeline_uuid: str,
    trigger_name: str | None,
    execution_date: datetime,
    execution_partition: str,
    event_variables: dict[str, Any],
) -> dict[str, Any]:
    """The keys the system sets for every block; they win over user variables."""
    return {
        "execution_date": execution_date.isoformat(),
        "ds": execution_date.strftime("%Y-%m-%d"),
        "hr": execution_date.strftime("%H"),
        "event": dict(event_variables),
        "execution_partition": execution_partition,
        "pipeline_run_id": run_id,
        "trigger_name": trigger_name,
        "pipeline_uuid": pipeline_uuid,
    }


def parse_time(value: str) -> datetime:
    """Parse a Mage timestamp (``YYYY-MM-DD HH:MM:SS.ffffff+00:00``) or any ISO 8601 string."""
    return datetime.fromisoformat(value)
