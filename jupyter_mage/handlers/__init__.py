"""HTTP handlers: Mage's routes, answered with Mage's envelopes and real status codes.

One module per resource: :mod:`.pipelines`, :mod:`.triggers` (with the token routes),
:mod:`.runs` (runs and block runs); :mod:`.base` holds the JSON and error handling.

Handlers hold no state: they parse and validate, call the app's services (the run service
``self.mage.runs`` for accepting, cancelling and retrying runs; the store and the pipeline
repository for reading) and answer. Every verb is ``@web.authenticated`` then
``@authorized``, except the two per-trigger token routes, where the trigger token is the
credential (as in Mage).

Success answers are HTTP 200, as Mage answers them (also for creation), so Mage clients work
unchanged; errors use real codes (see :class:`~jupyter_mage.validation.ApiError`).
"""

from __future__ import annotations

from .base import AUTH_RESOURCE, MageHandler
from .pipelines import (
    PipelineHandler,
    PipelineLogsHandler,
    PipelinesHandler,
    PipelineVariablesHandler,
)
from .runs import (
    BlockRunLogsHandler,
    BlockRunOutputsHandler,
    BlockRunsHandler,
    RunBlockRunsHandler,
    RunHandler,
    RunsHandler,
)
from .triggers import (
    BearerTriggerHandler,
    TokenPathTriggerHandler,
    TriggerHandler,
    TriggerRunsHandler,
    TriggersHandler,
)

# Routes, relative to base_url (the ExtensionApp prefixes it). Order matters: specific first.
_ID = r"(?P<trigger_id>[^/]+)"
_UUID = r"(?P<uuid>.+?)"
ROUTES: list[tuple[str, type[MageHandler]]] = [
    (r"/api/pipelines", PipelinesHandler),
    (rf"/api/pipelines/{_UUID}/pipeline_schedules", TriggersHandler),
    (rf"/api/pipelines/{_UUID}/logs", PipelineLogsHandler),
    (rf"/api/pipelines/{_UUID}", PipelineHandler),
    (rf"/mage/pipelines/{_UUID}/variables", PipelineVariablesHandler),
    (r"/api/pipeline_schedules", TriggersHandler),
    (rf"/api/pipeline_schedules/{_ID}", TriggerHandler),
    (rf"/api/pipeline_schedules/{_ID}/pipeline_runs", TriggerRunsHandler),
    (rf"/api/pipeline_schedules/{_ID}/pipeline_runs/(?P<token>[^/]+)", TokenPathTriggerHandler),
    (rf"/api/pipeline_schedules/{_ID}/api_trigger", BearerTriggerHandler),
    (r"/api/pipeline_runs", RunsHandler),
    (r"/api/pipeline_runs/(?P<run_id>[^/]+)", RunHandler),
    (r"/api/pipeline_runs/(?P<run_id>[^/]+)/block_runs", RunBlockRunsHandler),
    (r"/api/block_runs", BlockRunsHandler),
    (r"/api/block_runs/(?P<block_run_id>[^/]+)/outputs", BlockRunOutputsHandler),
    (r"/api/block_runs/(?P<block_run_id>[^/]+)/logs", BlockRunLogsHandler),
]

__all__ = ["AUTH_RESOURCE", "ROUTES", "MageHandler"]
