"""A pipeline's ``triggers.yaml`` as jupyter-mage triggers, written through the project's store.

Entries are matched on (pipeline uuid, trigger name), as Mage's own sync does
(``PipelineSchedule.create_or_update_batch``): a re-import updates the trigger it created
before instead of adding another. A token given in the file is kept (callers keep working);
without one, a new trigger gets a fresh token and an existing one keeps its own.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..storage import Store
from ..validation import (
    READ_ONLY_TRIGGER_FIELDS,
    SETTINGS_TYPES,
    WRITABLE_TRIGGER_FIELDS,
    ApiError,
    trigger_fields,
)
from .report import Report

#: Trigger types that become triggers (Mage's event triggers are deprecated, not carried).
CARRIED_TYPES = ("api", "time")
#: Shorter tokens are kept (callers use them) but reported as weak.
_STRONG_TOKEN_CHARS = 22


def trigger_values(entry: Any, pipeline: str, report: Report) -> dict[str, Any] | None:
    """Validated trigger columns of one ``triggers.yaml`` entry (``token`` included when
    given); None, with an error in the report, when the entry cannot be a trigger."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        report.error(pipeline, "triggers.yaml", "an entry without a name is not carried")
        return None
    name = entry["name"]
    subject = f"trigger {name}"
    kind = entry.get("schedule_type") or "api"
    if kind not in CARRIED_TYPES:
        report.error(pipeline, subject, f"{kind} triggers are not carried")
        return None
    if kind == "time":
        report.warning(
            pipeline,
            subject,
            "time trigger stored with its schedule, but jupyter-mage does not start scheduled "
            "runs: it runs when called (run now, or its token route if made an api trigger)",
        )
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key in WRITABLE_TRIGGER_FIELDS:
            values[key] = value
        elif key != "token":
            known = "Mage's bookkeeping" if key in READ_ONLY_TRIGGER_FIELDS else "no such field"
            report.note(pipeline, subject, f"'{key}' not carried ({known} here)")
    values["schedule_type"] = kind
    start = values.get("start_time")
    if isinstance(start, datetime | date):  # YAML reads unquoted dates as dates
        values["start_time"] = start.isoformat()
    settings = values.get("settings")
    if isinstance(settings, dict):
        for key in [k for k in settings if k not in SETTINGS_TYPES]:
            report.note(pipeline, subject, f"setting '{key}' not carried")
            del settings[key]
    for key in ("variables", "settings"):
        if values.get(key) is None:
            values.pop(key, None)
    try:
        fields, _ = trigger_fields(values, creating=True)
    except ApiError as exc:
        report.error(pipeline, subject, f"not carried: {exc.message}")
        return None
    token = entry.get("token")
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            report.error(pipeline, subject, "its token is not a string: a new token was made")
        else:
            fields["token"] = token.strip()
            if len(fields["token"]) < _STRONG_TOKEN_CHARS:
                report.warning(pipeline, subject, "its token is short (kept as given)")
    return fields


async def write_triggers(
    store: Store, pipeline: str, pipeline_uuid: str, entries: list[Any], report: Report
) -> None:
    """Create or update the triggers of one pipeline (``pipeline_uuid``: its notebook's)."""
    existing = {t["name"]: t for t in await store.list_triggers(pipeline_uuid)}
    for entry in entries:
        values = trigger_values(entry, pipeline, report)
        if values is None:
            continue
        name = values["name"]
        try:
            if name in existing:
                await store.update_trigger(existing[name]["id"], values)
                report.triggers.append((pipeline_uuid, name, "updated"))
            else:
                created = await store.create_trigger({**values, "pipeline_uuid": pipeline_uuid})
                existing[name] = created
                report.triggers.append((pipeline_uuid, name, f"created (id {created['id']})"))
        except IntegrityError:
            report.error(
                pipeline,
                f"trigger {name}",
                "not carried: its token is already another trigger's",
            )
