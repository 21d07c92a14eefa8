"""A shell in a sandbox, over a websocket: `docker exec` with a TTY, flow-controlled both ways,
audited (see TerminalConsumer)."""

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model

from teams.permissions import Role

from .. import engine
from ..models import Sandbox
from ..services import terminals
from .streams import SandboxStream, hand_over, parse_message, whole_number


class TerminalConsumer(SandboxStream):
    """/ws/sandboxes/<pk>/terminal/: a shell in the sandbox (`docker exec` with a TTY), as the
    sandbox's own non-root user in /workspace. Operators and above. Binary frames carry the
    bytes both ways; {"t": "resize", "cols": C, "rows": R} resizes. Closing the page ends the
    shell, and so does stopping the sandbox. Audited (who, when, how long), never recorded.

    Flow control both ways, as a real terminal has: the page acknowledges the output it has
    written ({"t": "ack", "n": bytes}), and the shell's output is read only while less than
    OUTPUT_WINDOW is unacknowledged (a `yes` into a page that stops reading pauses the shell,
    it does not grow the server). Keystrokes go to the shell from a thread of their own; while
    the shell does not read them, at most INPUT_LIMIT bytes wait and the rest is refused."""

    needed_role = Role.OPERATOR
    SHELL = ["/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"]
    OUTPUT_WINDOW = 1 << 20
    INPUT_LIMIT = 256 * 1024

    async def started(self):
        sandbox = self.sandbox
        self.session = None
        self.terminal: engine.Terminal | None = None
        # What ends the shell is fixed when it opens, so that the end never depends on the
        # user's access at that moment (a removed user's shell is hung up too).
        self.docker = engine.engine_for(sandbox)
        self.shell_of = sandbox
        self.output: asyncio.Queue = asyncio.Queue()
        self.sent = self.acked = self.read_total = 0
        self.window_open = threading.Event()
        self.window_open.set()
        self.pending_input = 0
        # Keystrokes go to the shell in order, from one thread of their own (a full pipe must
        # never block the event loop, and two writers could reorder them).
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"term-in-{self.sandbox_id}")
        user = await database_sync_to_async(get_user_model().objects.get)(pk=self.user_id)
        client = self.scope.get("client") or [None]
        try:
            self.session = await database_sync_to_async(terminals.terminal_open)(actor=user, sandbox=sandbox, source_ip=client[0])
            env = {"TERM": "xterm-256color", "HOME": f"/home/{settings.SANDBOX_USER}", "LANG": "C.UTF-8"}
            self.terminal = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: self.docker.open_terminal(
                    sandbox.container_id,
                    user=f"{settings.SANDBOX_UID}:{settings.SANDBOX_GID}",
                    workdir="/workspace",
                    cmd=self.SHELL,
                    env=env,
                ),
            )
        except Exception as exc:  # noqa: BLE001 - refused or Docker failed: say why, then close
            await self.send_json({"t": "error", "text": f"The terminal could not open: {exc}"})
            await self._end(str(exc))
            return
        if getattr(self, "ending", None) is not None:  # the socket ended while the shell opened
            terminal, self.terminal = self.terminal, None
            await self._hang_up(terminal)
            return
        await database_sync_to_async(terminals.terminal_started)(
            session=self.session, exec_id=self.terminal.exec_id, server=terminals.this_server()
        )
        loop = asyncio.get_running_loop()
        self.sender = loop.create_task(self._send_loop())
        threading.Thread(target=self._read, args=(self.terminal, loop), name=f"term-{self.sandbox_id}", daemon=True).start()

    def _read(self, terminal: engine.Terminal, loop) -> None:
        """Thread: the shell's output, in order, to the one sender; it reads only while less
        than OUTPUT_WINDOW of what it read is unacknowledged."""
        while True:
            while self.read_total - self.acked >= self.OUTPUT_WINDOW:
                self.window_open.clear()
                if self.read_total - self.acked < self.OUTPUT_WINDOW:
                    break  # acknowledged between the test and the clear
                self.window_open.wait(timeout=0.5)
                if self.closed:
                    return
            data = terminal.read()
            if not data or not hand_over(loop, self.output.put_nowait, data):
                break
            self.read_total += len(data)
        hand_over(loop, self.output.put_nowait, None)

    async def _send_loop(self) -> None:
        while (data := await self.output.get()) is not None:
            while not self.output.empty() and len(data) < 65536:
                more = self.output.get_nowait()
                if more is None:
                    self.output.put_nowait(None)
                    break
                data += more
            if self.closed or not await self.allowed():
                return
            await self.send(bytes_data=data)
            self.sent += len(data)
        await self._end(await self._why_the_shell_ended())

    async def _why_the_shell_ended(self) -> str:
        """The shell's output ended: it exited, or the sandbox's container is going away under
        it (a stop, a restart, a destroy: the sandbox's claim or status says which)."""
        row = await database_sync_to_async(Sandbox.objects.filter(pk=self.sandbox_id).values_list("status", "pending_action").first)()
        if row is None:
            return "the shell ended (the sandbox was deleted)"
        status, pending = row
        if pending:
            return f"the shell ended while the sandbox's {pending} was under way"
        return "the shell ended" if status == Sandbox.Status.RUNNING else f"the shell ended (the sandbox is {status})"

    def _write(self, data: bytes) -> None:
        """Hand keystrokes to the writer thread without waiting for the shell to take them."""
        terminal = self.terminal
        if terminal is None:
            return
        if self.pending_input + len(data) > self.INPUT_LIMIT:
            return  # the shell reads nothing (a foreground command): typing ahead is bounded
        self.pending_input += len(data)
        future = self.writer.submit(terminal.send, data)
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _f: hand_over(loop, self._written, len(data)))

    def _written(self, size: int) -> None:
        self.pending_input -= size

    async def receive(self, text_data=None, bytes_data=None):
        if self.closed or self.terminal is None or not await self.allowed():
            return
        if bytes_data is not None:
            self._write(bytes_data)
            return
        message = parse_message(text_data)
        kind = message.get("t")
        if kind == "ack":
            n = whole_number(message.get("n"), low=0, high=1 << 62)
            if n is not None:
                self.acked = min(self.sent, max(self.acked, n))
                self.window_open.set()
        elif kind == "resize":
            cols = whole_number(message.get("cols"), low=1, high=1000)
            rows = whole_number(message.get("rows"), low=1, high=500)
            if cols is not None and rows is not None:
                docker, exec_id = self.docker, self.terminal.exec_id
                try:
                    await asyncio.get_running_loop().run_in_executor(None, lambda: docker.resize_terminal(exec_id, cols=cols, rows=rows))
                except engine.EngineError:
                    pass
        elif kind == "in" and isinstance(message.get("d"), str):
            self._write(message["d"].encode("utf-8", "replace"))

    async def status_changed(self, sandbox: Sandbox) -> None:
        if sandbox.status != Sandbox.Status.RUNNING:
            await self._end(f"the sandbox is {sandbox.status}")

    async def stopped(self):
        await self._end(self.end_reason or "the page closed")

    async def _end(self, reason: str) -> None:
        """Hang up and record the end, once; a later call waits for the first to be done (so
        the socket closes after the record). The first cause is the one recorded: hanging up
        ends the shell's output too, and the sender would otherwise record "the shell ended"
        over the page closing, a removal from the team or a sign-out."""
        first = getattr(self, "ending", None) is None
        if first:
            self.end_reason = getattr(self, "end_reason", "") or reason
            self.ending = asyncio.ensure_future(self._close_session())
        try:
            await asyncio.shield(self.ending)
        except Exception:
            if first:
                raise  # to dispatch(), which logs it and closes the socket; later callers carry on

    async def _close_session(self) -> None:
        session, self.session = getattr(self, "session", None), None
        terminal, self.terminal = getattr(self, "terminal", None), None
        if getattr(self, "window_open", None) is not None:
            self.window_open.set()  # let the reader thread see the end
        await self._hang_up(terminal)
        if getattr(self, "writer", None) is not None:
            self.writer.shutdown(wait=False, cancel_futures=True)
        if session is not None:
            await database_sync_to_async(terminals.terminal_close)(session=session, reason=self.end_reason)
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):  # the socket may be gone already
                await self.send_json({"t": "end", "text": f"Terminal closed: {self.end_reason}."})
            await self.close()

    async def _hang_up(self, terminal: engine.Terminal | None) -> None:
        if terminal is None:
            return
        terminal.close()  # a keystroke write blocked on a full pipe fails now
        # Not on the consumers' shared database thread: a hang-up waits up to a second for the
        # shell to go. Here, or by the host's agent where the engine is another machine's.
        await database_sync_to_async(terminals.end_shell, thread_sensitive=False)(sandbox=self.shell_of, exec_id=terminal.exec_id)
