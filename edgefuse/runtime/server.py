"""The web kiosk: FastAPI app with a touch page, a JSON API, health/readiness and a bounded queue.

Model work runs on one worker thread fed by a bounded queue: a full queue answers 503 at once
(with Retry-After), every request carries a deadline (a request still queued when its deadline
passes is dropped, not computed), and /api/ask requests waiting together are answered in one
model run (micro-batching, up to RuntimeConfig.max_batch). Inputs are validated and
preprocessed in the request's own thread before they queue, so a bad upload never reaches or
fails a batch. Every error is JSON {code, message, hint} with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request  # module level: FastAPI resolves endpoint annotations here

from edgefuse.errors import EdgeFuseError, InputError, RunnerError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

# Error code -> HTTP status (everything else: InputError/DataError 400, other EdgeFuseErrors 500).
_STATUS = {
    "EF730": 400, "EF731": 413, "EF224": 413, "EF733": 413, "EF735": 413,
    "EF736": 415, "EF737": 415, "EF750": 404, "EF751": 404,
    "EF790": 503, "EF791": 503, "EF792": 503, "EF793": 503,
}


@dataclass
class ServerSettings:
    """What the server enforces; built from RuntimeConfig (edgefuse/config.py)."""

    queue_size: int = 16
    deadline_ms: int = 5000
    max_batch: int = 8
    batch_wait_ms: float = 2.0  # how long a batch waits for company after its first request
    max_upload_bytes: int = 8 << 20

    @classmethod
    def from_runtime(cls, rc: Any, **overrides: Any) -> ServerSettings:
        s = cls(queue_size=int(rc.queue_size), deadline_ms=int(rc.deadline_ms), max_batch=int(rc.max_batch),
                max_upload_bytes=int(rc.max_upload_mb * (1 << 20)))
        for k, v in overrides.items():
            setattr(s, k, v)
        return s


@dataclass
class _Job:
    kind: str  # ask | ground | match | caption
    args: tuple[Any, ...]
    deadline: float
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


class Stats:
    """Counters for /api/stats (what the load test reads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {"admitted": 0, "rejected_full": 0, "expired": 0, "completed": 0, "failed": 0,
                                       "batches": 0, "batched_items": 0}

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            d = dict(self.counts)
        d["mean_batch"] = round(d["batched_items"] / d["batches"], 3) if d["batches"] else 0.0
        return d


class Worker:
    """One thread that runs every model call, micro-batching /api/ask requests."""

    def __init__(self, pipeline: Any, settings: ServerSettings, stats: Stats) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.stats = stats
        # Admission (KioskState.admit) bounds requests to queue_size + max_batch; this bound is a backstop.
        self.queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, settings.queue_size + settings.max_batch))
        self._held: list[_Job] = []  # non-ask jobs pulled while gathering a batch
        self.thread = threading.Thread(target=self._loop, name="edgefuse-kiosk-worker", daemon=True)
        self.thread.start()

    def submit(self, job: _Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.stats.add("rejected_full")
            raise RunnerError("the kiosk is busy (request queue full)", "try again in a moment", code="EF790") from None
        self.stats.add("admitted")

    def stop(self) -> None:
        try:
            self.queue.put(None, timeout=1.0)
        except queue.Full:
            pass
        self.thread.join(timeout=5.0)

    def _next(self, timeout: float | None) -> _Job | None:
        if self._held:
            return self._held.pop(0)
        return self.queue.get(timeout=timeout) if timeout is not None else self.queue.get()

    def _loop(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception:  # noqa: BLE001 - the worker must outlive any one request
                log.exception("kiosk worker error (request dropped)")

    def _step(self) -> bool:
        """Serve one job or batch; False when told to stop."""
        job = self._next(None)
        if job is None:
            return False
        if self._expired(job):
            return True
        if job.kind != "ask":
            self._run_single(job)
            return True
        batch = [job]
        wait_until = time.perf_counter() + self.settings.batch_wait_ms / 1000.0
        stop = False
        while len(batch) < self.settings.max_batch:
            try:
                nxt = self.queue.get_nowait()
            except queue.Empty:
                remaining = wait_until - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    nxt = self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if nxt is None:
                stop = True
                break
            if self._expired(nxt):
                continue
            if nxt.kind == "ask" and nxt.args[2] == job.args[2]:  # same top_k
                batch.append(nxt)
            else:
                self._held.append(nxt)
        self._run_batch(batch)
        return not stop

    def _expired(self, job: _Job) -> bool:
        """Drop a job whose deadline passed (or whose request already gave up) instead of computing it."""
        if job.future.done() or time.perf_counter() > job.deadline:
            self.stats.add("expired")
            _settle(job.future, error=RunnerError("the request waited past its deadline", "the kiosk is busy; try again",
                                                  code="EF791"))
            return True
        return False

    def _run_batch(self, batch: list[_Job]) -> None:
        pv = np.concatenate([j.args[0] for j in batch], axis=0)
        try:
            answers = self.pipeline.answer_prepared(pv, [j.args[1] for j in batch], batch[0].args[2])
        except Exception as e:  # noqa: BLE001 - delivered to every waiting request
            self.stats.add("failed", len(batch))
            for j in batch:
                _settle(j.future, error=e)
            return
        self.stats.add("batches")
        self.stats.add("batched_items", len(batch))
        self.stats.add("completed", len(batch))
        for j, a in zip(batch, answers, strict=True):
            _settle(j.future, result=a)

    def _run_single(self, job: _Job) -> None:
        fn = {"ground": self.pipeline.ground, "match": self.pipeline.match, "caption": self.pipeline.caption}[job.kind]
        try:
            result = fn(*job.args)
        except Exception as e:  # noqa: BLE001
            self.stats.add("failed")
            _settle(job.future, error=e)
            return
        self.stats.add("completed")
        _settle(job.future, result=result)


def _settle(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Complete a request's future unless the request already gave up (deadline, disconnect)."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # noqa: BLE001 - InvalidStateError: cancelled in between
        pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes (413) without reading them all."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_error(send, 413, _too_big(int(length), self.limit))
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(seen)
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge as e:
            await _send_error(send, 413, _too_big(e.seen, self.limit))


class _BodyTooLarge(Exception):
    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.seen = seen


def _too_big(size: int, limit: int) -> dict[str, str]:
    return InputError(f"upload is over {limit / 1e6:.1f} MB (got {size / 1e6:.1f} MB or more)", "send a smaller photo",
                      code="EF735").to_dict()


async def _send_error(send: Callable, status: int, body: dict[str, str]) -> None:
    import json

    data = json.dumps(body).encode()
    try:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": data})
    except Exception:  # noqa: BLE001 - response already started: nothing better to do
        log.debug("could not send %s", status)


class KioskState:
    """Loading, readiness and the worker, shared by the endpoints."""

    def __init__(self, factory: Callable[[], Any], settings: ServerSettings) -> None:
        self.factory = factory
        self.settings = settings
        self.stats = Stats()
        self.pipeline: Any = None
        self.worker: Worker | None = None
        self.ready = False
        self.error: str | None = None
        self.warm_up: dict[str, Any] = {}
        self.started = time.time()
        # Requests inside the app at once (parsing, preprocessing, queued, running). Admission is
        # decided on arrival, so an overloaded kiosk answers 503 at once instead of letting work
        # pile up in front of the model queue.
        self.max_inflight = settings.queue_size + settings.max_batch
        self.inflight = 0
        self._inflight_lock = threading.Lock()

    def admit(self) -> float:
        """Admit a request or refuse it with 503; returns its deadline (perf_counter seconds)."""
        with self._inflight_lock:
            if self.inflight >= self.max_inflight:
                self.stats.add("rejected_full")
                raise RunnerError("the kiosk is busy (request queue full)", "try again in a moment", code="EF790")
            self.inflight += 1
        return time.perf_counter() + self.settings.deadline_ms / 1000.0

    def release(self) -> None:
        with self._inflight_lock:
            self.inflight -= 1

    def load(self) -> None:
        """Load the pipeline and answer one warm-up request; only then report ready."""
        try:
            t0 = time.perf_counter()
            self.pipeline = self.factory()
            self.warm_up = self.pipeline.warm_up()
            self.warm_up["seconds"] = round(time.perf_counter() - t0, 3)
            self.worker = Worker(self.pipeline, self.settings, self.stats)
            self.ready = True
            log.info("kiosk ready in %.2fs", self.warm_up["seconds"])
        except EdgeFuseError as e:
            self.error = e.line()
            log.error("kiosk failed to load: %s", self.error)
        except Exception as e:  # noqa: BLE001 - reported by /readyz
            self.error = f"{type(e).__name__}: {e}"
            log.exception("kiosk failed to load")

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.pipeline is not None:
            self.pipeline.close()

    async def submit(self, kind: str, deadline: float, *args: Any) -> Any:
        """Queue model work and wait for it; 503 when the queue is full or the deadline passes."""
        if not self.ready or self.worker is None:
            raise RunnerError("the kiosk is still loading" if self.error is None else "the kiosk failed to load",
                              "wait for /readyz" if self.error is None else self.error, code="EF793")
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            self.stats.add("expired")
            raise RunnerError("the request ran past its deadline before it reached the model", "the kiosk is busy; try again",
                              code="EF791")
        job = _Job(kind, args, deadline)
        self.worker.submit(job)
        try:
            # the worker drops jobs whose deadline passed while queued; one still running at the
            # deadline is answered 503 here (its result is discarded), so a 200 is never late
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout=remaining)
        except asyncio.TimeoutError:
            raise RunnerError("the request ran past its deadline", "the kiosk is busy; try again", code="EF792") from None


def create_app(factory: Callable[[], Any], settings: ServerSettings | None = None, load_in_background: bool = True) -> Any:
    """The FastAPI app. `factory()` builds the KioskPipeline (called once, off the event loop)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServerSettings()
    state = KioskState(factory, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        loader = threading.Thread(target=state.load, name="edgefuse-kiosk-loader", daemon=True)
        loader.start()
        if not load_in_background:
            await run_in_threadpool(loader.join)
        yield
        state.close()

    app = FastAPI(title="edgefuse kiosk", lifespan=lifespan, docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.kiosk = state

    def error_response(e: EdgeFuseError) -> JSONResponse:
        status = _STATUS.get(e.code) or (400 if isinstance(e, InputError) or e.code.startswith("EF2") else 500)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(e.to_dict(), status_code=status, headers=headers)

    @app.exception_handler(EdgeFuseError)
    async def _edgefuse_error(request: Request, e: EdgeFuseError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        return JSONResponse({"code": "EF738", "message": f"bad request: {where} {first.get('msg', '')}".strip(),
                             "hint": "see /api/docs"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"code": f"HTTP{e.status_code}", "message": str(e.detail), "hint": "see /api/docs"},
                            status_code=e.status_code)

    async def read_form(request: Request, text_field: str | None) -> tuple[bytes, str, Any]:
        """Multipart form -> (image bytes, text, form); wrong content types are 415."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise InputError(f"expected multipart/form-data, got '{ctype.split(';')[0] or 'none'}'",
                             "post a form with an 'image' file field", code="EF736")
        try:
            form = await request.form(max_files=2, max_fields=10)
        except _BodyTooLarge:
            raise
        except Exception as e:  # noqa: BLE001 - malformed multipart
            raise InputError(f"malformed form data: {str(e).splitlines()[0][:100]}", "post multipart/form-data", code="EF730") from e
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise InputError("no 'image' file in the form", "attach the photo as the 'image' field", code="EF730")
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        if part_type and part_type != "application/octet-stream" and not part_type.startswith("image/"):
            raise InputError(f"the image part has content type '{part_type}'", "upload a JPEG or PNG photo", code="EF737")
        data = await upload.read()
        text = ""
        if text_field is not None:
            value = form.get(text_field)
            text = value if isinstance(value, str) else ""
        return data, text, form

    def int_field(form: Any, name: str, default: int, lo: int, hi: int) -> int:
        raw = form.get(name)
        if raw is None or raw == "":
            return default
        try:
            v = int(str(raw))
        except ValueError:
            raise InputError(f"'{name}' must be an integer, got '{str(raw)[:20]}'", f"use {lo}..{hi}", code="EF739") from None
        if not lo <= v <= hi:
            raise InputError(f"'{name}' must be in {lo}..{hi}, got {v}", f"use {lo}..{hi}", code="EF739")
        return v

    def need_ready() -> Any:
        if not state.ready:
            raise RunnerError("the kiosk is still loading" if state.error is None else "the kiosk failed to load",
                              "wait for /readyz" if state.error is None else state.error, code="EF793")
        return state.pipeline

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok", "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: the model loaded and answered a warm-up request."""
        if state.ready:
            return JSONResponse({"ready": True, "warm_up": state.warm_up})
        body = {"ready": False, "reason": state.error or "loading"}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        pipeline = need_ready()
        return {**pipeline.info(), "limits": {"max_upload_bytes": settings.max_upload_bytes,
                                              "max_image_pixels": pipeline.limits.max_image_pixels,
                                              "max_question_chars": pipeline.limits.max_question_chars,
                                              "queue_size": settings.queue_size, "deadline_ms": settings.deadline_ms,
                                              "max_batch": settings.max_batch}}

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        d = state.stats.snapshot()
        d["queued"] = state.worker.queue.qsize() if state.worker else 0
        return d

    @app.post("/api/ask")
    async def ask(request: Request) -> dict[str, Any]:
        """multipart: image (file), question (text), top_k (optional, 1..20) -> answer, confidence, top_k."""
        pipeline = need_ready()
        t0 = time.perf_counter()
        deadline = state.admit()
        try:
            data, question, form = await read_form(request, "question")
            top_k = int_field(form, "top_k", 5, 1, 20)
            pv, question = await run_in_threadpool(pipeline.prepare, data, question, "question")
            answer = await state.submit("ask", deadline, pv, question, top_k)
        finally:
            state.release()
        return {**answer.to_dict(), "question": question, "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.post("/api/ground")
    async def ground(request: Request) -> dict[str, Any]:
        """multipart: image, phrase -> box (x, y, w, h in 0..1), box_pixels, png_base64 (box drawn)."""
        pipeline = need_ready()
        t0 = time.perf_counter()
        deadline = state.admit()
        try:
            data, phrase, _ = await read_form(request, "phrase")
            pipeline._require("grounding")
            await run_in_threadpool(pipeline.prepare, data, phrase, "phrase")  # refuse bad input before queueing
            g = await state.submit("ground", deadline, data, phrase)
        finally:
            state.release()
        return {**g.to_dict(), "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.post("/api/match")
    async def match(request: Request) -> dict[str, Any]:
        """multipart: image, caption -> score (probability the caption describes the photo)."""
        pipeline = need_ready()
        t0 = time.perf_counter()
        deadline = state.admit()
        try:
            data, caption, _ = await read_form(request, "caption")
            pipeline._require("itm")
            await run_in_threadpool(pipeline.prepare, data, caption, "caption")
            score = await state.submit("match", deadline, data, caption)
        finally:
            state.release()
        return {"caption": " ".join(caption.split()), "score": score, "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.post("/api/caption")
    async def caption(request: Request) -> dict[str, Any]:
        """multipart: image, num_beams (optional, 1..8) -> caption text."""
        pipeline = need_ready()
        t0 = time.perf_counter()
        if pipeline.captioner is None:
            raise RunnerError("this kiosk has no captioning model", "start it with --caption-artifact", code="EF751")
        deadline = state.admit()
        try:
            data, _, form = await read_form(request, None)
            beams = int_field(form, "num_beams", 1, 1, 8)
            await run_in_threadpool(pipeline.load_images, [data])
            c = await state.submit("caption", deadline, data, beams)
        finally:
            state.release()
        return {**c.to_dict(), "ms": round((time.perf_counter() - t0) * 1000, 2)}

    if settings.max_upload_bytes:
        app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024)  # form fields' overhead
    return app


def serve(factory: Callable[[], Any], settings: ServerSettings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the kiosk with uvicorn (blocking)."""
    import uvicorn

    # The app's own admission control answers overload with JSON 503s; uvicorn's limit is only a backstop.
    uvicorn.run(create_app(factory, settings), host=host, port=port, log_level="warning", timeout_keep_alive=30,
                limit_concurrency=max(1024, settings.queue_size * 16))
