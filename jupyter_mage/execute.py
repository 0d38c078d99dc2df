"""One execute request to a kernel: send it, hand its iopub messages on, know when it is over.

jupyter_client's ``execute_interactive`` waits for the request's ``idle`` status on iopub, and
waits forever if that message never comes. iopub is a PUB/SUB channel: ZeroMQ drops messages at
its high-water mark when the reader falls behind, so ``idle`` can be lost; the shell reply, on a
DEALER/ROUTER channel, cannot. So this reader ends a request on the reply plus ``idle``, or on the
reply plus a moment of quiet on iopub (:data:`REPLY_GRACE`) when ``idle`` does not follow.
Whether anything was lost is for the caller's own accounting to tell (the run-time numbers its
events). It also needs no zmq socket of the client (``get_msg`` only), which gateway clients
lack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from jupyter_client.client import KernelClient

from .gateway import GatewayKernelConnection

#: Seconds of silence on iopub after the shell reply before the request counts as over though
#: its ``idle`` status never came.
REPLY_GRACE = 2.0

MessageHook = Callable[[dict[str, Any]], None]


class MessageChannel(Protocol):
    """A kernel channel as runs read it: messages, awaited (``queue.Empty`` after ``timeout``)."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]: ...


class KernelConnection(Protocol):
    """What runs need of a kernel's client: jupyter_client's ``AsyncKernelClient`` for local
    kernels, :class:`jupyter_mage.gateway.GatewayKernelConnection` for a gateway's."""

    @property
    def shell_channel(self) -> MessageChannel: ...

    @property
    def iopub_channel(self) -> MessageChannel: ...

    def execute(
        self,
        code: str,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
    ) -> str: ...

    def kernel_info(self) -> str: ...

    def start_channels(self) -> Awaitable[None] | None: ...

    def stop_channels(self) -> None: ...


class ExecuteRequest:
    """An execute request in flight on a connected (async) kernel client.

    Parameters
    ----------
    client
        The kernel's client, channels started.
    on_message
        Called with every iopub message of this request except its status messages.
    """

    def __init__(self, client: KernelConnection, on_message: MessageHook | None = None) -> None:
        self.client = client
        self.on_message = on_message
        self.msg_id: str | None = None
        #: The ``execute_reply`` content, once it came.
        self.reply: dict[str, Any] | None = None
        #: The request's ``idle`` status came on iopub.
        self.idle = False
        self._last_message = 0.0

    async def run(self, code: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``code`` (with the request's ``metadata``); return the reply's content once the
        request is over."""
        loop = asyncio.get_running_loop()
        self._last_message = loop.time()
        self.msg_id = send_execute(self.client, code, metadata)
        reader = asyncio.ensure_future(self._read_iopub())
        try:
            self.reply = await self._read_reply()
            # The reply can overtake the request's last iopub messages: wait for its idle, for
            # as long as messages keep coming, and never longer than a quiet REPLY_GRACE.
            while not reader.done():
                quiet = loop.time() - self._last_message
                if quiet >= REPLY_GRACE:
                    break
                await asyncio.wait({reader}, timeout=REPLY_GRACE - quiet)
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        return self.reply

    async def _read_reply(self) -> dict[str, Any]:
        while True:
            msg = await self.client.shell_channel.get_msg()
            if msg["parent_header"].get("msg_id") == self.msg_id:
                return msg["content"]  # type: ignore[no-any-return]

    async def _read_iopub(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await self.client.iopub_channel.get_msg()
            if msg["parent_header"].get("msg_id") != self.msg_id:
                continue  # an earlier request's late messages
            self._last_message = loop.time()
            if msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "idle":
                    self.idle = True
                    return
                continue
            if self.on_message is not None:
                self.on_message(msg)


def send_execute(
    client: KernelConnection, code: str, metadata: dict[str, Any] | None = None
) -> str:
    """Send an execute request (not stored in the kernel's history, no stdin); its msg_id.

    ``metadata`` goes in the request's metadata: data the code reads from the request
    (``get_ipython().kernel.get_parent()``) rather than from its own source.
    jupyter_client's ``execute`` takes none, so the message is built with the client's session.
    """
    if metadata is None:
        return client.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": False,
    }
    if isinstance(client, GatewayKernelConnection):
        return client.send("shell", "execute_request", content, metadata)
    if not isinstance(client, KernelClient):
        raise TypeError(f"cannot send metadata through a {type(client).__name__}")
    msg = client.session.msg("execute_request", content, metadata=metadata)
    client.shell_channel.send(msg)
    return str(msg["header"]["msg_id"])


async def execute(
    client: KernelConnection, code: str, timeout: float | None = None
) -> dict[str, Any]:
    """Run ``code`` (its output ignored); the reply's content. ``TimeoutError`` after ``timeout``."""
    return await asyncio.wait_for(ExecuteRequest(client).run(code), timeout)
