"""Keep trigger tokens out of the server's logs.

Tokens travel in URL paths (``.../pipeline_runs/<token>``, Mage's webhook form), and a URL gets
into log lines in many shapes: the access log, tornado's 4xx warnings (with the path argument
as a *bytes* repr when it is not UTF-8), the ``%r`` of a request object under an uncaught
exception, a traceback's exception message, a ``Referer``. Several of these are written for
requests that never reach a handler of ours (a wrong base URL, a ``//`` in the path, a failed
XSRF check), by loggers we do not own.

So the scrubbing works on the **final text**, not on the arguments, and for **every** logger of
the process: :func:`install` sets a log-record factory (``logging.setLogRecordFactory``, chained
to the previous one). Each record is scrubbed once, when it is made, which covers loggers and
handlers created later too; a filter on chosen loggers would miss records of other loggers, and
a filter on every handler would have to be added to each handler anyone creates. A record is
created only once its logger's level lets it through, so the cost is one extra formatting of
the message of records that are emitted anyway, and one regex search over it; when the text
holds no trigger URL the record is left exactly as it was. When it does, the record keeps the
scrubbed text (``msg`` = the formatted message, ``args = None``); a traceback (``exc_info``) is
formatted at once and, if it held a token, kept only as scrubbed ``exc_text`` (``exc_info`` is
dropped, so no handler can render the original again). ``stack_info`` is scrubbed too.

Not covered by the factory: fields passed with ``extra=`` (set on the record after the factory
ran) and records built by ``logging.makeLogRecord`` (e.g. received from a socket); the loggers
given to :func:`install` also get a :class:`TokenScrubber` filter for the latter, and it can be
attached to any handler that formats such records.

What is masked (:func:`scrub`): whatever follows ``pipeline_runs`` and one or more ``/`` (also
``%2F``, ``\\/``; case-insensitive, ``_`` also as ``%5F``) up to the end of the path, so ``//``
and extra segments do not escape it; run ids (``pipeline_runs/12``, ``pipeline_runs/12/
block_runs``) stay readable, since a token (32 hex characters) is never a number of at most 18
digits. Each masked token also masks its other appearances in the same text (tornado repeats
the path argument after the URL, as ``b'<token>\\xff'``).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_to_bytes

MASK = "[secret]"

_SLASH = r"(?:/|\\/|%(?:25)*2f)"
# What ends a path inside a log line: whitespace, quotes, a query or fragment, closing brackets.
_END = r"""\s'"`?#&<>)\]}"""
_TOKEN_IN_PATH = re.compile(
    rf"(pipeline(?:_|%(?:25)*5f)runs{_SLASH}++)"  # possessive: // cannot backtrack
    # Already masked, or a run's own route (its id, block_runs): nothing to hide.
    rf"(?!{re.escape(MASK)})(?![0-9]{{1,18}}(?:/block_runs/?)?(?:[{_END}]|$))"
    rf"([^{_END}]+)",
    re.IGNORECASE,
)
# Pieces of a masked path that may be (part of) the token, to mask elsewhere in the same text.
_PIECE = re.compile(r"[A-Za-z0-9_.~-]{6,}")
_FORMATTER = logging.Formatter()
_MARK = "_jupyter_mage_scrubber"


def scrub(text: str) -> str:
    """``text`` with the token of every trigger URL in it replaced by ``[secret]``."""
    if "runs" not in text.lower():  # no trigger URL: the common case, one C-level scan
        return text
    pieces: set[str] = set()

    def mask(match: re.Match[str]) -> str:
        rest = match.group(2)
        # The token as written (TOKEN%FF) and as decoded (%41BC... is ABC...).
        decoded = unquote_to_bytes(rest).decode("latin-1")
        pieces.update(_PIECE.findall(rest), _PIECE.findall(decoded))
        return match.group(1) + MASK

    text = _TOKEN_IN_PATH.sub(mask, text)
    for piece in sorted(pieces, key=len, reverse=True):
        if piece not in MASK:  # "secret" itself would mangle the masks already written
            text = text.replace(piece, MASK)
    return text


def scrub_record(record: logging.LogRecord) -> None:
    """Replace a record's message, traceback and stack text by their scrubbed forms, in place.

    A record without a trigger URL is left as it was (its arguments stay for handlers that use
    them). Each record is scrubbed once.
    """
    if getattr(record, _MARK, False):
        return
    setattr(record, _MARK, True)
    try:
        message = record.getMessage()
    except Exception:  # bad arguments: logging would report them at emit; keep the parts
        message = f"{record.msg} {record.args!r}"
        record.msg, record.args = message, None
    scrubbed = scrub(message)
    if scrubbed != message:
        record.msg, record.args = scrubbed, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = _FORMATTER.formatException(record.exc_info)
        clean = scrub(text)
        if clean != text:
            record.exc_text, record.exc_info = clean, None
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


class TokenScrubber(logging.Filter):
    """A filter doing :func:`scrub_record`, for records that did not come from the factory."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def install(*loggers: logging.Logger) -> None:
    """Scrub every log record of the process from now on (idempotent).

    ``loggers`` also get a :class:`TokenScrubber`, for records handed to them that the factory
    did not make (``logger.handle(logging.makeLogRecord(...))``).
    """
    for logger in loggers:
        if not any(isinstance(f, TokenScrubber) for f in logger.filters):
            logger.addFilter(TokenScrubber())
    previous = logging.getLogRecordFactory()
    if getattr(previous, _MARK, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub_record(record)
        return record

    setattr(factory, _MARK, True)
    logging.setLogRecordFactory(factory)
