"""A kernel client for kernels on a Kernel Gateway or Enterprise Gateway (``--gateway-url``).

With ``--gateway-url``, the server's kernel manager is jupyter_server's
``GatewayMappingKernelManager`` and ``kernel.client()`` gives a ``GatewayKernelClient``. That
client does not fit a pipeline run (measured with jupyter_server 2.21):

- its ``get_msg`` polls a thread's queue with ``asyncio.sleep(0)``, burning most of a core for as
  long as a block runs;
- it opens the channels websocket without the gateway's auth header, so a gateway started with an
  auth token answers 401;
- its messages carry no ``channel`` field, so the gateway logs every one of them at WARNING ("No
  channel specified, assuming shell"), the whole code included: a run's code carries its plan
  and variables, which must not reach the gateway's log;
- a kernel that the gateway restarted looks alive (``is_alive()`` stays true) and the client
  waits forever for the dead kernel's reply.

:class:`GatewayKernelConnection` is the small client the engine needs instead: one websocket to
``{ws_url}/api/kernels/<id>/channels``, opened with the gateway's own connection arguments (auth
header, TLS, timeouts: ``GatewayClient.load_connection_args``); one reader task that hands every
frame to the queue of its channel (no polling); every message sent names its ``channel``. A
websocket that closes, or an iopub ``status`` of ``restarting`` or ``dead`` (which the gateway
sends when its restarter replaces the kernel, or gives up), or an iopub ``shutdown_reply`` (the
kernel was shut down or restarted through the REST API, and the gateway keeps the websocket
open, silent), makes every pending and later read raise :class:`KernelConnectionLost` once the
messages that came before are read, and completes :meth:`GatewayKernelConnection.lost`, which a
run can wait on beside its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from queue import Empty
from typing import Any, Final

from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelManager, GatewayMappingKernelManager
from jupyter_server.services.kernels.connection.base import deserialize_binary_message
from jupyter_server.utils import url_escape, url_path_join
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

__all__ = [
    "CHANNELS",
    "GatewayChannel",
    "GatewayKernelConnection",
    "KernelConnectionLost",
    "connect",
    "is_gateway",
]

#: The kernel channels a gateway's websocket carries (``hb`` is not one: the gateway beats).
CHANNELS: Final = ("shell", "iopub", "stdin", "control")

#: iopub ``execution_state`` values that the gateway (not the kernel) sends: the kernel this
#: connection talked to is gone, even though the websocket stays open.
LOST_STATES: Final = {
    "restarting": "the gateway restarted the kernel (it had died)",
    "dead": "the kernel died and the gateway could not restart it",
}

#: Seconds between websocket pings; a gateway that answers none within as long is gone.
PING_INTERVAL: Final = 10.0

log = logging.getLogger(__name__)

# jupyter_server's helper for messages with buffers; it has no annotations (in some versions).
_deserialize_binary: Any = deserialize_binary_message


class KernelConnectionLost(ConnectionError):
    """The kernel behind a gateway connection is gone: no reply will ever come."""


class _Lost:
    """The marker put in every queue once the connection is lost (wakes each reader)."""


_LOST: Final = _Lost()


class GatewayChannel:
    """The messages of one channel, in the order the gateway sent them.

    The async part of jupyter_client's channel interface that the engine uses: :meth:`get_msg`
    (``queue.Empty`` on timeout), :meth:`msg_ready`, :meth:`is_alive`.
    """

    def __init__(self, name: str, connection: GatewayKernelConnection) -> None:
        self.name = name
        self._connection = connection
        self._queue: asyncio.Queue[dict[str, Any] | _Lost] = asyncio.Queue()

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; ``queue.Empty`` after ``timeout`` seconds (None: no limit).

        Messages that came before the connection was lost are still returned; after them, this
        raises :class:`KernelConnectionLost`.
        """
        if self._queue.empty():
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
                raise Empty from None
        else:
            item = self._queue.get_nowait()
        if isinstance(item, _Lost):
            self._queue.put_nowait(item)  # for the next reader, and the one after
            raise self._connection.lost_reason()
        return item

    def msg_ready(self) -> bool:
        """A message (or the news of the loss) is waiting."""
        return not self._queue.empty()

    def is_alive(self) -> bool:
        """The connection is open."""
        return self._connection.channels_running

    def _put(self, item: dict[str, Any] | _Lost) -> None:
        self._queue.put_nowait(item)


class GatewayKernelConnection:
    """A client of one kernel on a gateway, over the gateway's channels websocket.

    Parameters
    ----------
    kernel_id
        The gateway's id of the kernel (already started, e.g. by the kernel manager).
    gateway
        The gateway's settings: url, auth token, TLS, timeouts. Default: the server's
        ``GatewayClient.instance()``, which ``--gateway-url`` configures.
    session
        Builds the messages sent (``Session.msg``). Default: a new session; its id names this
        connection to the gateway (``session_id``).
    ping_interval
        Seconds between websocket pings; the connection counts as lost when a ping gets no
        answer within as long (a gateway gone without closing the socket). None: no pings.
    """

    def __init__(
        self,
        kernel_id: str,
        gateway: GatewayClient | None = None,
        session: Session | None = None,
        ping_interval: float | None = PING_INTERVAL,
    ) -> None:
        self.kernel_id = kernel_id
        self.gateway = gateway if gateway is not None else GatewayClient.instance()
        self.session = session if session is not None else Session()
        self.ping_interval = ping_interval
        self._channels = {name: GatewayChannel(name, self) for name in CHANNELS}
        self._ws: WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lost: KernelConnectionLost | None = None
        self._lost_event = asyncio.Event()

    # -- channels ------------------------------------------------------------------------------

    @property
    def shell_channel(self) -> GatewayChannel:
        """Replies to requests (execute, kernel_info, ...)."""
        return self._channels["shell"]

    @property
    def iopub_channel(self) -> GatewayChannel:
        """Output, status and everything the kernel broadcasts."""
        return self._channels["iopub"]

    @property
    def stdin_channel(self) -> GatewayChannel:
        """Input requests (runs never allow stdin)."""
        return self._channels["stdin"]

    @property
    def control_channel(self) -> GatewayChannel:
        """Replies to control requests."""
        return self._channels["control"]

    @property
    def ws_url(self) -> str:
        """The kernel's channels websocket on the gateway."""
        url = url_path_join(
            self.gateway.ws_url or "",
            self.gateway.kernels_endpoint,
            url_escape(self.kernel_id),
            "channels",
        )
        return f"{url}?session_id={url_escape(self.session.session)}"

    @property
    def channels_running(self) -> bool:
        """The websocket is open and the connection not lost."""
        return self._ws is not None and self._lost is None

    async def start_channels(self) -> None:
        """Open the websocket (with the gateway's headers and timeouts) and start reading.

        Raises the websocket's error (e.g. ``HTTPClientError`` 401 for a wrong token, 404 for an
        unknown kernel) if the gateway refuses it.
        """
        if self._ws is not None:
            return
        gateway: Any = self.gateway  # load_connection_args has no annotations
        args: dict[str, Any] = gateway.load_connection_args()
        request = HTTPRequest(self.ws_url, **args)
        self._ws = await websocket_connect(
            request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            max_message_size=1 << 30,  # outputs can be large; the default is 10 MiB
        )
        self._reader = asyncio.ensure_future(self._read(self._ws))

    def stop_channels(self) -> None:
        """Close the websocket; reads pending or to come raise :class:`KernelConnectionLost`."""
        self._set_lost("the connection to the kernel was closed")
        if self._ws is not None:
            self._ws.close()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    # -- loss ----------------------------------------------------------------------------------

    async def lost(self) -> KernelConnectionLost:
        """Wait until the connection is lost (websocket closed, kernel restarted or dead)."""
        await self._lost_event.wait()
        return self.lost_reason()

    def lost_reason(self) -> KernelConnectionLost:
        """Why the connection was lost (call once it is)."""
        if self._lost is None:
            raise RuntimeError("the connection is not lost")
        return self._lost

    def _set_lost(self, reason: str) -> None:
        if self._lost is not None:
            return
        self._lost = KernelConnectionLost(f"kernel {self.kernel_id}: {reason}")
        self._lost_event.set()
        for channel in self._channels.values():
            channel._put(_LOST)  # after the messages that came before: those are still read
        if self._ws is not None:
            self._ws.close()  # the gateway keeps a websocket of a restarted kernel open

    async def _read(self, ws: WebSocketClientConnection) -> None:
        try:
            while True:
                frame = await ws.read_message()
                if frame is None:
                    code, why = ws.close_code, ws.close_reason
                    detail = f" (code {code}{': ' + why if why else ''})" if code else ""
                    self._set_lost(f"the gateway closed the kernel's websocket{detail}")
                    return
                self._dispatch(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a frame we cannot read: nothing after it can be trusted
            self._set_lost(f"unreadable message from the gateway: {exc}")
            ws.close()

    def _dispatch(self, frame: str | bytes) -> None:
        if self._lost is not None:
            return  # the old kernel's last words, or the new kernel's first: no reader wants them
        if isinstance(frame, bytes):  # a message with buffers (the legacy binary framing)
            msg: dict[str, Any] = _deserialize_binary(frame)
        else:
            msg = json.loads(frame)
        channel = self._channels.get(msg.get("channel") or "")
        if channel is None:
            log.debug("kernel %s: message on no known channel dropped", self.kernel_id)
            return
        header = msg.get("header") or {}
        msg.setdefault("msg_type", header.get("msg_type"))
        msg.setdefault("msg_id", header.get("msg_id"))
        channel._put(msg)
        if channel.name != "iopub":
            return
        if msg["msg_type"] == "status":
            state = (msg.get("content") or {}).get("execution_state")
            if state in LOST_STATES:
                self._set_lost(LOST_STATES[state])
        elif msg["msg_type"] == "shutdown_reply":
            # The kernel was shut down (DELETE) or restarted (POST .../restart) through the
            # gateway's REST API: the websocket stays open, but no reply will come on it.
            restart = (msg.get("content") or {}).get("restart")
            self._set_lost("the kernel was restarted" if restart else "the kernel was shut down")

    # -- requests ------------------------------------------------------------------------------

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send a message built by the session on a channel; its ``msg_id``.

        Raises :class:`KernelConnectionLost` when the connection is lost (or never opened).
        """
        if self._lost is not None:
            raise self._lost
        if self._ws is None:
            raise KernelConnectionLost(f"kernel {self.kernel_id}: channels not started")
        msg = self.session.msg(msg_type, content, metadata=metadata)
        msg["channel"] = channel
        frame = json.dumps(msg, default=json_default)
        try:
            written = self._ws.write_message(frame)
        except WebSocketClosedError:
            self._set_lost("the gateway closed the kernel's websocket")
            raise self.lost_reason() from None
        written.add_done_callback(self._written)
        return str(msg["header"]["msg_id"])

    def _written(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            if future.exception() is not None:
                self._set_lost("the gateway closed the kernel's websocket")

    def execute(
        self,
        code: str,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
    ) -> str:
        """Send an ``execute_request`` (the arguments of jupyter_client's); its ``msg_id``."""
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": user_expressions or {},
            "allow_stdin": bool(allow_stdin),
            "stop_on_error": stop_on_error,
        }
        return self.send("shell", "execute_request", content)

    def kernel_info(self) -> str:
        """Send a ``kernel_info_request``; its ``msg_id``."""
        return self.send("shell", "kernel_info_request", {})


def is_gateway(kernel_manager: Any) -> bool:
    """The (multi-)kernel manager, or one kernel's manager, runs kernels on a gateway."""
    return isinstance(kernel_manager, GatewayMappingKernelManager | GatewayKernelManager)


def connect(
    kernel_manager: Any, kernel_id: str, session: Session | None = None
) -> GatewayKernelConnection:
    """A connection (channels not started) to a kernel that ``kernel_manager`` started.

    ``kernel_manager`` is the server's ``GatewayMappingKernelManager`` (or the kernel's own
    ``GatewayKernelManager``); the gateway's settings are the server's ``GatewayClient``.
    """
    if not is_gateway(kernel_manager):
        raise TypeError(f"{type(kernel_manager).__name__} does not run kernels on a gateway")
    return GatewayKernelConnection(kernel_id, GatewayClient.instance(), session)
