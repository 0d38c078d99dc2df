"""Checks of request input. Each failure is an :class:`ApiError` with a 4xx status.

Handlers call these and store only what they return, so nothing unchecked reaches the database,
the engine or the kernel. Every bound is chosen so that what passes fits where it goes:

- JSON bodies: finite numbers only (``NaN``, ``Infinity`` and overflowing literals such as
  ``1e999`` are refused: Python would write them back as ``Infinity``, which is not JSON), no
  lone surrogate escapes (``"\\ud800"`` has no UTF-8 form, so a notebook file or a text column
  could not store it), and at most :data:`MAX_JSON_DEPTH` levels of nesting (deeper documents
  overflow the stack of whoever walks them next, e.g. the kernel).
- Integers in paths and queries: ASCII digits only (``str.isdigit`` and ``int`` also take
  superscripts, other scripts' digits or ``"1_000"``), at most :data:`MAX_ID` for ids and
  :data:`MAX_OFFSET` for paging, so every value fits a 64-bit SQL integer.
- Dates: between the years 1000 and 9999 once converted to UTC (earlier years are written
  without four digits by ``strftime`` and would not read back; later ones do not exist).
- Trigger settings and ``sla``: at most :data:`MAX_SETTING` (seconds or runs), which fits a
  32-bit SQL integer and a float timeout; trigger text fits PostgreSQL (no NUL, bounded length).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

from tornado import web

from .statuses import RunStatus, TriggerStatus
from .variables import parse_time

TRIGGER_TYPES = ("api", "time")
TRIGGER_STATUSES = tuple(s.value for s in TriggerStatus)
RUN_STATUSES = tuple(s.value for s in RunStatus)
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
#: Run fields a caller may put at the top level by mistake (the ``pipeline_run`` level forgotten).
_MISPLACED_RUN_FIELDS = ("variables", "execution_date")
_INTERVAL = re.compile(r"^(@once|@hourly|@daily|@weekly|@monthly|@always_on|(\S+\s+){4}\S+)$")
#: Deepest nesting of arrays and objects accepted in a request body (the body itself is level 1,
#: so a trigger call's variables may nest 61 levels). Mage bodies need a handful.
MAX_JSON_DEPTH = 64
#: Largest id in a path or query (18 digits: fits a 64-bit SQL integer).
MAX_ID = 10**18 - 1
#: Largest ``_offset`` (and ``_limit`` before it is capped): paging never needs more.
MAX_OFFSET = 10**9
#: Largest ``sla``, ``timeout`` or ``pipeline_run_limit`` (fits a 32-bit SQL integer).
MAX_SETTING = 10**9
#: Upper bounds of query integers by parameter name; other query integers are ids.
_QUERY_LIMITS = {"_offset": MAX_OFFSET, "_limit": MAX_OFFSET}
_DIGITS = re.compile(r"[0-9]{1,18}")
_SECONDS = re.compile(r"(?:[0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")
# A \u escape that may decode to a lone surrogate (a false positive only costs a walk).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MIN_YEAR = 1000


class ApiError(web.HTTPError):
    """An error answered as ``{"message", "error": {"code", "type", "message"}}``."""

    def __init__(
        self, status: int, error_type: str, message: str, errors: list[Any] | None = None
    ) -> None:
        # Passed as an argument: tornado %-formats log_message when it logs the error.
        super().__init__(status, "%s", message)
        self.error_type = error_type
        self.message = message
        #: Itemised problems (a pipeline's validation errors), as ``error.errors`` in the body.
        self.errors = errors


class TriggerNotFound(ApiError):
    """The 404 of a trigger id that does not exist (nothing to note a refusal on)."""

    def __init__(self, trigger_id: int | str) -> None:
        super().__init__(404, "not_found", f"trigger {str(trigger_id)[:40]} not found")


class _NotFinite(ValueError):
    """A JSON number that is not a finite float (``NaN``, ``Infinity``, ``1e999``)."""


def _reject_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" parses to inf
        raise _NotFinite(f"{text[:40]} is out of range")
    return value


def _check_tree(data: Any, strings: bool) -> None:
    """Depth (and, if ``strings``, lone surrogates) of a decoded document, walked iteratively."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items: Any = value.values()
            if strings and any(_SURROGATE.search(k) for k in value):
                raise ApiError(400, "invalid_json", "request body holds a lone surrogate escape")
        elif isinstance(value, list):
            items = value
        else:
            if strings and isinstance(value, str) and _SURROGATE.search(value):
                raise ApiError(400, "invalid_json", "request body holds a lone surrogate escape")
            continue
        if depth > MAX_JSON_DEPTH:
            raise ApiError(
                400, "invalid_json", f"request body is nested deeper than {MAX_JSON_DEPTH} levels"
            )
        stack.extend((item, depth + 1) for item in items)


def parse_json_object(body: bytes, limit: int) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (an empty body is ``{}``).

    Refused with 400: invalid JSON, non-finite numbers (``NaN``, ``Infinity``, ``1e999``), lone
    surrogate escapes, nesting deeper than :data:`MAX_JSON_DEPTH`; with 413: a body over
    ``limit`` bytes. The checks after decoding walk the document only when a cheap scan of the
    bytes says they could fail (more brackets than the depth bound, a ``\\uD8..`` escape).
    """
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", f"request body is larger than {limit} bytes")
    if not body.strip():
        return {}
    try:
        data = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NotFinite:
        raise ApiError(
            400, "invalid_json", "request body holds a number that is not finite"
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    # Every "[" or "{" of any encoding json.loads reads holds the byte 0x5B or 0x7B, so the
    # count bounds the depth from above; the walk costs nothing for ordinary bodies.
    deep = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    strings = _SURROGATE_ESCAPE.search(body) is not None
    if deep or strings:
        _check_tree(data, strings)
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


def parse_execution_date(value: Any, name: str = "execution_date") -> datetime:
    """A timezone-aware UTC datetime from an ISO string (naive means UTC).

    The UTC date must lie in the years 1000 to 9999: ``0001-01-01T00:00:00+01:00`` or
    ``9999-12-31T23:59:59-01:00`` do not exist in UTC, and years before 1000 would be stored
    without their four digits (``strftime``) and not read back.
    """
    if not isinstance(value, str):
        raise ApiError(400, "invalid_execution_date", f"'{name}' must be an ISO 8601 string")
    try:
        parsed = parse_time(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        else:
            parsed = parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed.year < _MIN_YEAR:
        raise ApiError(
            400,
            "invalid_execution_date",
            f"'{name}' is not a valid date between the years {_MIN_YEAR} and 9999 (UTC): "
            f"{value[:64]!r}",
        )
    return parsed


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
    for key in ("name", "description"):
        if "\x00" in (values.get(key) or ""):  # PostgreSQL text cannot hold NUL
            raise ApiError(400, "invalid_field", f"'{key}' must not contain NUL characters")
    if creating:
        values.setdefault("schedule_type", "api")
        values.setdefault("status", TriggerStatus.ACTIVE)
    if "schedule_type" in values and values["schedule_type"] not in TRIGGER_TYPES:
        raise ApiError(400, "invalid_field", f"'schedule_type' must be one of {TRIGGER_TYPES}")
    if "status" in values and values["status"] not in TRIGGER_STATUSES:
        raise ApiError(400, "invalid_field", f"'status' must be one of {TRIGGER_STATUSES}")
    interval = values.get("schedule_interval")
    if interval is not None and (
        not isinstance(interval, str) or len(interval) > 50 or not _INTERVAL.match(interval)
    ):
        raise ApiError(
            400,
            "invalid_field",
            "'schedule_interval' must be @once, @hourly, @daily, "
            "@weekly, @monthly, @always_on or a cron expression (at most 50 characters)",
        )
    if values.get("start_time") is not None:
        values["start_time"] = parse_execution_date(values["start_time"], "start_time")
    sla = values.get("sla")
    if sla is not None and (
        not isinstance(sla, int) or isinstance(sla, bool) or not 0 <= sla <= MAX_SETTING
    ):
        raise ApiError(
            400, "invalid_field", f"'sla' must be an integer from 0 to {MAX_SETTING} (seconds)"
        )
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
        if settings.get("timeout_status") not in (None, RunStatus.FAILED, RunStatus.CANCELLED):
            raise ApiError(400, "invalid_field", "'timeout_status' must be failed or cancelled")
        if settings.get("pipeline_run_limit_action") not in (None, "wait", "skip"):
            raise ApiError(400, "invalid_field", "'pipeline_run_limit_action' must be wait or skip")
        for key in ("pipeline_run_limit", "timeout"):
            if settings.get(key) is not None and not 0 < settings[key] <= MAX_SETTING:
                raise ApiError(
                    400, "invalid_field", f"setting '{key}' must be positive, at most {MAX_SETTING}"
                )
        values["settings"] = settings
    return values, rotate


def wait_seconds(value: str | None, maximum: float) -> float | None:
    """The ``?wait=`` query parameter: seconds to hold the answer, at most ``maximum``.

    A plain decimal in ASCII (``30``, ``0.5``): no sign, exponent, ``nan`` or ``inf``.
    """
    if value is None:
        return None
    if not _SECONDS.fullmatch(value):
        raise ApiError(400, "invalid_parameter", "'wait' must be a non-negative number of seconds")
    return min(float(value), maximum)


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
    misplaced = [key for key in _MISPLACED_RUN_FIELDS if key in body and key not in run]
    if misplaced:
        # Top-level keys are Mage's event variables, so {"variables": {...}} would be taken
        # as one event variable named "variables" and the run variables silently lost.
        raise ApiError(
            400,
            "misplaced_field",
            f"{', '.join(repr(k) for k in misplaced)} must go inside 'pipeline_run': "
            '{"pipeline_run": {"variables": {...}}}',
        )
    variables = _object(run.get("variables"), "variables")
    execution_date = None
    if run.get("execution_date") is not None:
        execution_date = parse_execution_date(run["execution_date"])
    events = {key: value for key, value in body.items() if key != "pipeline_run"}
    return variables, execution_date, events


def positive_int(value: str | None, name: str, default: int, maximum: int | None = None) -> int:
    """A query parameter that must be a non-negative integer in ASCII digits.

    Values above ``maximum`` are capped to it; values out of range (over :data:`MAX_OFFSET` for
    ``_offset`` and ``_limit``, over :data:`MAX_ID` for ids) are a 400.
    """
    if value is None or value == "":
        return default
    bound = _QUERY_LIMITS.get(name, MAX_ID)
    value = value.strip(" \t")
    if not _DIGITS.fullmatch(value) or int(value) > bound:
        raise ApiError(400, "invalid_parameter", f"'{name}' must be an integer from 0 to {bound}")
    number = int(value)
    return min(number, maximum) if maximum is not None else number


def parse_id(value: str, what: str) -> int:
    """A path id; anything that is not 1 to 18 ASCII digits is simply not found."""
    if not _DIGITS.fullmatch(value):
        raise ApiError(404, "not_found", f"{what} {value[:40]!r} not found")
    return int(value)


def decode_argument(value: bytes, name: str | None = None) -> str:
    """A percent-decoded path or query argument as text; invalid UTF-8 is a 400.

    Unlike tornado's own check, the message does not echo the value: on the token route the
    value is the trigger's token.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(
            400, "invalid_argument", f"the {name or 'URL'} argument is not valid UTF-8"
        ) from None
