"""`onebit serve --model MODEL`: an OpenAI-compatible HTTP server and a chat page on the C runtime.

One loaded model, `--parallel N` sessions over it, each driven by its own worker thread (the C
calls run off the event loop and release the GIL). A request takes a free session or waits in a
bounded queue; a full queue answers 503. A client that goes away stops its generation at the next
token, which frees the session. Starlette routes, uvicorn serves; docs/SERVE.md has the API.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import click

from onebit.errors import OnebitError, cli_errors
from onebit.run.c import CRuntimeError, Session, SharedModel, parse_bytes
from onebit.chat_template import ChatTemplateError, template_for
from onebit.run.openai_api import ApiError, GenerationRequest, new_id, now, parse_chat, parse_completion, usage
from onebit.run.textgen import TextGeneration

PAGE = Path(__file__).with_name("chat_page.html")
MAX_BODY = 8 << 20  # bytes of a request body; a prompt is at most a context long anyway


@dataclass
class ServeConfig:
    model_path: Path
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 1
    queue: int = 32
    threads: int = 1
    ctx: int = 0
    max_tokens: int = 1024
    api_key: str | None = None
    name: str = ""  # the model id clients ask for; the file's stem when empty
    max_memory: int = 0  # bytes each session (with the model) may need; 0 = no limit


@dataclass
class Job:
    """One choice to generate: its index in the response, prompt ids and sampler seed."""
    index: int
    ids: list[int]
    seed: int


@dataclass
class Slot:
    """A session and the tokens its KV-cache holds, from position 0: a request whose prompt starts
    with all of them evaluates only the rest (a chat resent with one more message, for one)."""
    session: Session
    cached: list[int] = field(default_factory=list)

    def reusable(self, ids: list[int]) -> int:
        """How many leading tokens of ids are already in the cache (0: start afresh)."""
        k = len(self.cached)
        # pos == k and k < n_ctx: no slide happened (a slide leaves the cache holding a tail)
        if 0 < k < len(ids) and k < self.session.n_ctx and self.session.pos == k and ids[:k] == self.cached:
            return k
        return 0


class Engine:
    """The model, its sessions and the queue in front of them."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.model = SharedModel(config.model_path)
        self.name = config.name or config.model_path.stem
        metadata = self.model.metadata()
        self.template = template_for(metadata)
        tok = metadata.get("tokenizer") or {}
        # a completion's prompt starts with BOS when the model asks for it (a chat template places it itself)
        bos = tok.get("bos_token_id")
        self.bos: list[int] = [bos] if tok.get("add_bos_token") and isinstance(bos, int) else []
        self.slots = [Slot(self.model.session(n_ctx=config.ctx, threads=config.threads,
                                              max_memory=config.max_memory)) for _ in range(config.parallel)]
        self.n_ctx = self.slots[0].session.n_ctx
        self.pool = ThreadPoolExecutor(max_workers=config.parallel, thread_name_prefix="onebit-session")
        self._idle: list[Slot] = list(self.slots)
        self._waiters: deque[asyncio.Future] = deque()
        self.active: set[threading.Event] = set()  # the cancel flags of requests in flight
        self.stopping = False

    def stop_all(self) -> None:
        """Shutting down: every generation stops at its next token (a signal handler calls this)."""
        self.stopping = True
        for cancel in list(self.active):
            cancel.set()

    def check_busy(self) -> None:
        """503 when no session is free and the queue is full."""
        if not self._idle and len(self._waiters) >= self.config.queue:
            raise ApiError(503, f"the server is busy: {self.config.parallel} requests running and "
                                f"{len(self._waiters)} waiting", code="server_busy", kind="server_error")

    async def acquire(self, ids: list[int]) -> Slot:
        """A free slot, the one whose cache covers most of ids; else wait in the queue (FIFO)."""
        self.check_busy()
        if self._idle:
            slot = max(self._idle, key=lambda sl: sl.reusable(ids))
            self._idle.remove(slot)
            return slot
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just as the client left
                self.release(waiter.result())
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, slot: Slot) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._idle.append(slot)

    def prepare(self, req: GenerationRequest) -> list[list[int]]:
        """The prompts as ids (a chat's rendered by the template), each checked against the context."""
        if req.messages is not None:
            try:
                req.prompts = [self.template.render(req.messages, add_generation_prompt=True)]
            except ChatTemplateError as e:
                raise ApiError(400, str(e), "messages") from None
        param = "prompt" if req.messages is None else "messages"
        what = "the prompt" if req.messages is None else "the conversation, with the chat template,"
        out = []
        for text in req.prompts:
            try:
                ids = self.model.encode(text)
                if req.messages is None and ids:
                    ids = self.bos + ids
            except CRuntimeError as e:
                raise ApiError(400, f"{what} cannot be tokenized: {e}", param) from None
            if not ids:
                raise ApiError(400, "the prompt is empty: generation needs at least one token", param)
            if len(ids) > self.n_ctx:
                raise ApiError(400, f"{what} ({len(ids)} tokens) is longer than the context of {self.n_ctx} "
                                    "tokens", param, code="context_length_exceeded")
            out.append(ids)
        return out

    def _work(self, slot: Slot, req: GenerationRequest, jobs: list[Job], emit: Callable,
              cancel: threading.Event) -> None:
        """The worker thread: generate every choice, emitting ("text", i, piece) and ("done", i,
        finish_reason, n_tokens, cached_tokens); stops between two tokens once `cancel` is set."""
        session = slot.session
        try:
            for job in jobs:
                if cancel.is_set():  # the client left while the request waited for a session
                    return
                reuse = slot.reusable(job.ids)
                if not reuse:
                    session.reset()
                slot.cached = []  # unknown until this job ends well
                sampler = type(req.sampler)(**{**req.sampler.__dict__, "seed": job.seed})
                tokens = session.stream(job.ids[reuse:], req.max_tokens, sampler, should_stop=cancel.is_set)
                # a chat answer ends at the template's stop strings too; a completion only at the request's
                stop = [*req.stop, *(self.template.stop if req.messages is not None else ())]
                gen = TextGeneration(self.model, tokens, req.max_tokens, stop, self.template.stop_tokens)
                for piece in gen:
                    emit(("text", job.index, piece))
                slot.cached = job.ids + gen.tokens[:-1]  # the last token sampled was not evaluated
                if cancel.is_set():
                    return
                emit(("done", job.index, gen.finish_reason, len(gen.tokens), reuse))
        except Exception as e:  # noqa: BLE001 - reported to the client, the server stays up
            slot.cached = []
            emit(("error", str(e)))
        finally:
            emit(("end",))

    async def run(self, req: GenerationRequest, prompts: list[list[int]], cancel: threading.Event) -> AsyncIterator:
        """Events of the generation, from a session's worker thread."""
        slot = await self.acquire(prompts[0])
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        jobs = [Job(p * req.n + i, ids, (req.sampler.seed + i) % (1 << 64))
                for p, ids in enumerate(prompts) for i in range(req.n)]

        def emit(item: tuple) -> None:  # called on the worker thread
            loop.call_soon_threadsafe(events.put_nowait, item)

        future = loop.run_in_executor(self.pool, self._work, slot, req, jobs, emit, cancel)
        future.add_done_callback(lambda _: self.release(slot))  # the session is free once C returns
        self.active.add(cancel)
        if self.stopping:
            cancel.set()
        try:
            while True:
                item = await events.get()
                if item[0] == "end":
                    if self.stopping:
                        raise ApiError(503, "the server is shutting down", code="shutting_down", kind="server_error")
                    return
                yield item
        finally:
            cancel.set()
            self.active.discard(cancel)


def _error_response(e: ApiError):
    from starlette.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status)


async def _read_body(request) -> bytes:
    """The body, refused past MAX_BODY bytes before more is read."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _watch_disconnect(request, cancel: threading.Event) -> None:
    while not cancel.is_set():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


def build_app(engine: Engine):
    """The Starlette application over an Engine."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    config = engine.config

    def authorized(request: Request) -> bool:
        if not config.api_key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode())

    async def page(_request: Request):
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def no_icon(_request: Request):
        return Response(status_code=204)

    async def health(_request: Request):
        return JSONResponse({"status": "ok"})

    async def models(request: Request):
        if not authorized(request):
            return _error_response(ApiError(401, "a valid API key is required", code="invalid_api_key"))
        return JSONResponse({"object": "list", "data": [
            {"id": engine.name, "object": "model", "created": 0, "owned_by": "onebit",
             "context_length": engine.n_ctx}]})

    async def generate(request: Request, chat: bool):
        if not authorized(request):
            return _error_response(ApiError(401, "a valid API key is required", code="invalid_api_key"))
        try:
            try:
                body = json.loads(await _read_body(request))
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, "the request body is not valid JSON") from None
            req = (parse_chat if chat else parse_completion)(body, config.max_tokens)
            if req.model != engine.name:
                raise ApiError(404, f"the model '{req.model}' does not exist; this server runs '{engine.name}'",
                               "model", code="model_not_found")
            # rendering and tokenizing take time in proportion to the body: off the event loop too
            prompts = await asyncio.to_thread(engine.prepare, req)
            engine.check_busy()  # before a stream starts, while a status code can still say it
        except ApiError as e:
            return _error_response(e)
        cancel = threading.Event()
        rid, created = new_id("chatcmpl" if chat else "cmpl"), now()
        n_choices = len(prompts) * req.n
        n_prompt = [len(prompts[i // req.n]) for i in range(n_choices)]
        if req.stream:
            return StreamingResponse(_sse(engine, req, prompts, cancel, request, chat, rid, created, n_prompt),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        texts, finish, completion, cached = [""] * n_choices, [None] * n_choices, 0, 0
        watcher = asyncio.create_task(_watch_disconnect(request, cancel))
        try:
            async for item in engine.run(req, prompts, cancel):
                if item[0] == "text":
                    texts[item[1]] += item[2]
                elif item[0] == "done":
                    finish[item[1]] = item[2]
                    completion += item[3]
                    cached += item[4]
                else:
                    return _error_response(ApiError(500, item[1], kind="server_error"))
        except ApiError as e:
            return _error_response(e)
        finally:
            watcher.cancel()
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                        "finish_reason": f} for i, (t, f) in enumerate(zip(texts, finish))]
        else:
            choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": f}
                       for i, (t, f) in enumerate(zip(texts, finish))]
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": engine.name, "choices": choices,
                             "usage": usage(sum(len(p) for p in prompts) * req.n, completion, cached)})

    async def completions(request: Request):
        return await generate(request, chat=False)

    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    async def not_found(request: Request, _exc):
        return _error_response(ApiError(404, f"no route {request.method} {request.url.path}"))

    async def bad_method(request: Request, _exc):
        return _error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}"))

    async def internal(_request: Request, exc: Exception):
        return _error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error"))

    routes = [Route("/", page), Route("/favicon.ico", no_icon), Route("/health", health), Route("/v1/models", models),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method, Exception: internal})


def _chunk(chat: bool, rid: str, created: int, name: str, index: int, text: str | None, finish: str | None,
           first: bool = False) -> dict:
    if chat:
        delta = ({"role": "assistant", "content": ""} if first else {}) if text is None else {"content": text}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": name, "choices": [choice]}


def _event(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(engine: Engine, req: GenerationRequest, prompts: list[list[int]], cancel: threading.Event,
               request, chat: bool, rid: str, created: int, n_prompt: list[int]) -> AsyncIterator[str]:
    """The server-sent events of a streamed request, ending with `data: [DONE]`."""
    watcher = asyncio.create_task(_watch_disconnect(request, cancel))
    completion = cached = 0
    try:
        if chat:
            for i in range(len(n_prompt)):
                yield _event(_chunk(True, rid, created, engine.name, i, None, None, first=True))
        try:
            async for item in engine.run(req, prompts, cancel):
                if item[0] == "text":
                    yield _event(_chunk(chat, rid, created, engine.name, item[1], item[2], None))
                elif item[0] == "done":
                    completion += item[3]
                    cached += item[4]
                    yield _event(_chunk(chat, rid, created, engine.name, item[1], None, item[2]))
                else:
                    yield _event(ApiError(500, item[1], kind="server_error").body())
                    return
        except ApiError as e:  # the queue filled up after the check, or the server is shutting down
            yield _event(e.body())
            return
        if req.include_usage:
            yield _event({"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                          "created": created, "model": engine.name, "choices": [],
                          "usage": usage(sum(n_prompt), completion, cached)})
        yield _event("[DONE]")
    finally:
        cancel.set()
        watcher.cancel()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="The .1bit file to serve.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback requires --api-key.")
@click.option("--port", type=int, default=8080, show_default=True, help="TCP port (0 = any free one).")
@click.option("--parallel", "-np", type=int, default=1, show_default=True,
              help="Sessions (KV-caches) over the one loaded model: requests generated at the same time.")
@click.option("--queue", type=int, default=32, show_default=True,
              help="Requests that may wait for a session; beyond them the server answers 503.")
@click.option("--threads", "-t", type=int, default=1, show_default=True, help="Worker threads of each session.")
@click.option("--ctx", type=int, default=0, help="Context length.  [default: min(the model's max_seq_len, 4096)]")
@click.option("--max-tokens", type=int, default=1024, show_default=True,
              help="Most tokens one choice may generate (a request asking for more gets a 400); also the "
                   "default max_tokens of chat requests.")
@click.option("--max-memory", default=None,
              help="Fail at start if one session with the model would need more bytes than this, e.g. 512M.  "
                   "[default: no limit]")
@click.option("--name", default="", help="The model id clients name in requests.  [default: the file's stem]")
@click.option("--api-key", default=None, envvar="ONEBIT_API_KEY",
              help="Require `Authorization: Bearer KEY` on the API (also $ONEBIT_API_KEY).  [default: none]")
@cli_errors
def main(model_path: Path, host: str, port: int, parallel: int, queue: int, threads: int, ctx: int,
         max_tokens: int, max_memory: str | None, name: str, api_key: str | None) -> None:
    """Serve a .1bit model with an OpenAI-compatible API and a chat page (C runtime)."""
    if parallel < 1 or threads < 1 or queue < 0 or ctx < 0 or max_tokens < 1 or not 0 <= port < 65536:
        raise OnebitError("--parallel, --threads and --max-tokens must be >= 1; --queue, --ctx >= 0; "
                          "--port in 0..65535")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        raise OnebitError(f"binding to {host} exposes the server beyond this machine: give --api-key")
    try:
        import uvicorn
    except ImportError:
        raise OnebitError("onebit serve needs the serve extra: pip install 'onebit[serve]'") from None
    budget = parse_bytes(max_memory) if max_memory is not None else 0
    engine = Engine(ServeConfig(model_path, host, port, parallel, queue, threads, ctx, max_tokens, api_key, name,
                                budget))
    app = build_app(engine)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # before the address is printed: a client may connect at once
    except OSError as e:
        raise OnebitError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    bound = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    # the first stdout line: scripts and tests read the address from it
    print(f"serving {engine.name} on http://{url_host}:{bound}/ ({parallel} session(s), context {engine.n_ctx})",
          flush=True)
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # uvicorn waits for open responses before it stops: end the generations feeding them
            engine.stop_all()
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
