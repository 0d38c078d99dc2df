"""Checks of request bodies. Each failure is an :class:`ApiError` with a 4xx status.

Handlers call these and store only what they return, so nothing unchecked reaches the database,
the engine or the kernel.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from tornado import web

from .variables import parse_time

TRIGGER_TYPES = ("api", "time")
TRIGGER_STATUSES = ("active", "inactive")
RUN_STATUSES = ("initial", "running", "completed", "failed", "cancelled")
SETTINGS_TYPES: dict[str, tuple[type, ...]] = {
    "timeout": (int, float),
    "timeout_status": (str,),
    "pipeline_run_limit": (int,),
    "pipeline_run_limit_action": (str,),
    "skip_if_previous_running": (bool,),
    "allow_blocks_to_fail": (bool,),
}
#: Fields a client may send back unchanged after a GET (Mage's UI does); they are ignored.
READ_ONLY_TRIGGER_FIELDS = frozenset(
    {
        "id",
        "token",
        "created_at",
        "updated_at",
        "last_enabled_at",
        "last_pipeline_run_status",
        "pipeline_runs_count",
        "next_pipeline_run_date",
        "repo_path",
        "tags",
        "event_matchers",
    }
)
WRITABLE_TRIGGER_FIELDS = frozenset(
    {
        "name",
        "description",
        "schedule_type",
        "schedule_interval",
        "start_time",
        "status",
        "variables",
        "sla",
        "settings",
    }
)
RUN_FIELDS = frozenset({"variables", "execution_date", "pipeline_schedule_id", "pipeline_uuid"})
_INTERVAL = re.compile(r"^(@once|@hourly|@daily|@weekly|@monthly|@always_on|(\S+\s+){4}\S+)$")


class ApiError(web.HTTPError):
    """An error answered as ``{"message", "error": {"code", "type", "message"}}``."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        # Passed as an argument: tornado %-formats log_message when it logs the error.
        super().__init__(status, "%s", message)
        self.error_type = error_type
        self.message = message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes, limit: int) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (an empty body is ``{}``)."""
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", f"request body is larger than {limit} bytes")
    if not body.strip():
        return {}
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    return data


def envelope(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The object under ``key`` (``pipeline_schedule``, ``pipeline_run``), required."""
    value = body.get(key)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f'body must be {{"{key}": {{...}}}}')
    return value


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(
            400,
            "invalid_variables" if name == "variables" else "invalid_field",
            f"'{name}' must be a JSON object",
        )
    return value


def parse_execution_date(value: Any) -> datetime:
    """A timezone-aware UTC datetime from an ISO string (naive means UTC)."""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_execution_date", "'execution_date' must be an ISO 8601 string")
    try:
        parsed = parse_time(value.strip())
    except ValueError:
        raise ApiError(
            400, "invalid_execution_date", f"'execution_date' is not a valid date: {value[:64]!r}"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def trigger_fields(data: dict[str, Any], creating: bool) -> tuple[dict[str, Any], bool]:
    """Validated column values of a trigger, and whether the token is to be rotated."""
    rotate = data.get("rotate_token", False)
    if not isinstance(rotate, bool):
        raise ApiError(400, "invalid_field", "'rotate_token' must be true or false")
    if creating and rotate:
        raise ApiError(400, "invalid_field", "'rotate_token' applies to existing triggers only")
    unknown = (
        set(data)
        - WRITABLE_TRIGGER_FIELDS
        - READ_ONLY_TRIGGER_FIELDS
        - {
            "rotate_token",
            "pipeline_uuid",
        }
    )
    if unknown:
        raise ApiError(
            400, "unknown_field", f"unknown trigger field(s): {', '.join(sorted(unknown))}"
        )
    values: dict[str, Any] = {}
    for key in WRITABLE_TRIGGER_FIELDS & set(data):
        values[key] = data[key]

    if creating or "name" in values:
        name = values.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "invalid_field", "'name' must be a non-empty string")
        if len(name) > 255:
            raise ApiError(400, "invalid_field", "'name' is longer than 255 characters")
        values["name"] = name.strip()
    if "description" in values and not isinstance(values["description"], str | None):
        raise ApiError(400, "invalid_field", "'description' must be a string")
    if creating:
        values.setdefault("schedule_type", "api")
        values.setdefault("status", "active")
    if "schedule_type" in values and values["schedule_type"] not in TRIGGER_TYPES:
        raise ApiError(400, "invalid_field", f"'schedule_type' must be one of {TRIGGER_TYPES}")
    if "status" in values and values["status"] not in TRIGGER_STATUSES:
        raise ApiError(400, "invalid_field", f"'status' must be one of {TRIGGER_STATUSES}")
    interval = values.get("schedule_interval")
    if interval is not None and (not isinstance(interval, str) or not _INTERVAL.match(interval)):
        raise ApiError(
            400,
            "invalid_field",
            "'schedule_interval' must be @once, @hourly, @daily, "
            "@weekly, @monthly, @always_on or a cron expression",
        )
    if values.get("start_time") is not None:
        values["start_time"] = parse_execution_date(values["start_time"])
    sla = values.get("sla")
    if sla is not None and (not isinstance(sla, int) or isinstance(sla, bool) or sla < 0):
        raise ApiError(400, "invalid_field", "'sla' must be a non-negative integer (seconds)")
    if "variables" in values:
        values["variables"] = _object(values["variables"], "variables")
    if "settings" in values:
        settings = _object(values["settings"], "settings")
        for key, value in settings.items():
            types = SETTINGS_TYPES.get(key)
            if types is None:
                raise ApiError(400, "invalid_field", f"unknown setting '{key}'")
            if value is not None and (
                not isinstance(value, types) or (bool not in types and isinstance(value, bool))
            ):
                raise ApiError(400, "invalid_field", f"setting '{key}' has the wrong type")
        if settings.get("timeout_status") not in (None, "failed", "cancelled"):
            raise ApiError(400, "invalid_field", "'timeout_status' must be failed or cancelled")
        if settings.get("pipeline_run_limit_action") not in (None, "wait", "skip"):
            raise ApiError(400, "invalid_field", "'pipeline_run_limit_action' must be wait or skip")
        for key in ("pipeline_run_limit", "timeout"):
            if settings.get(key) is not None and settings[key] <= 0:
                raise ApiError(400, "invalid_field", f"setting '{key}' must be positive")
        values["settings"] = settings
    return values, rotate


def wait_seconds(value: str | None, maximum: float) -> float | None:
    """The ``?wait=`` query parameter: seconds to hold the answer, at most ``maximum``."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "'wait' must be a number of seconds") from None
    if not 0 <= seconds < float("inf"):
        raise ApiError(400, "invalid_parameter", "'wait' must be a non-negative number")
    return min(seconds, maximum)


def idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 printable characters."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 255 or not value.isprintable():
        raise ApiError(
            400, "invalid_header", "'Idempotency-Key' must be 1-255 printable characters"
        )
    return value


def run_request(body: dict[str, Any]) -> tuple[dict[str, Any], datetime | None, dict[str, Any]]:
    """From a trigger request body: run variables, execution date, event variables."""
    run = body.get("pipeline_run", {})
    if run is None:
        run = {}
    if not isinstance(run, dict):
        raise ApiError(400, "invalid_body", "'pipeline_run' must be a JSON object")
    unknown = set(run) - RUN_FIELDS
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown pipeline_run field(s): {', '.join(sorted(map(str, unknown)))[:200]}",
        )
    variables = _object(run.get("variables"), "variables")
    execution_date = None
    if run.get("execution_date") is not None:
        execution_date = parse_execution_date(run["execution_date"])
    events = {key: value for key, value in body.items() if key != "pipeline_run"}
    return variables, execution_date, events


def positive_int(value: str | None, name: str, default: int, maximum: int | None = None) -> int:
    """A query parameter that must be a non-negative integer."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"'{name}' must be an integer") from None
    if number < 0:
        raise ApiError(400, "invalid_parameter", f"'{name}' must not be negative")
    return min(number, maximum) if maximum is not None else number


def parse_id(value: str, what: str) -> int:
    """A path id; anything that is not a positive integer is simply not found."""
    if not value.isdigit() or len(value) > 18:
        raise ApiError(404, "not_found", f"{what} {value[:40]!r} not found")
    return int(value)
