"""Keep trigger tokens out of the server's logs.

Tokens travel in URL paths (``.../pipeline_runs/<token>``, Mage's webhook form). Jupyter and
tornado log request URIs (access log, 4xx warnings), also for requests that never reach our
handlers (a wrong base URL, a failed XSRF check), so the scrubbing is a logging filter on those
loggers rather than code in one handler.
"""

from __future__ import annotations

import logging
import re

_TOKEN_IN_PATH = re.compile(r"(pipeline_schedules/[^/\s]+/pipeline_runs/)[^/\s?#)]+")
MASK = "[secret]"


def scrub(text: str) -> str:
    """Replace the token segment of any trigger URL in ``text``."""
    return _TOKEN_IN_PATH.sub(rf"\g<1>{MASK}", text)


class TokenScrubber(logging.Filter):
    """Rewrites records whose message or arguments contain a trigger URL with a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "pipeline_runs/" in record.msg:
            record.msg = scrub(record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            if any(isinstance(a, str) and "pipeline_runs/" in a for a in args):
                scrubbed = tuple(scrub(a) if isinstance(a, str) else a for a in args)
                record.args = scrubbed if isinstance(record.args, tuple) else scrubbed[0]
        return True


def install(*loggers: logging.Logger) -> None:
    """Attach one scrubber to each logger (idempotent)."""
    for logger in loggers:
        if not any(isinstance(f, TokenScrubber) for f in logger.filters):
            logger.addFilter(TokenScrubber())
