"""``photocritic serve``: the model behind HTTP (FastAPI + uvicorn), with a web page.

Endpoints (multipart uploads in the field ``files``, one or more):

* ``POST /score`` - one row per file, the same fields as ``photocritic score
  --output x.jsonl`` writes (``path`` is the upload's file name);
* ``POST /explain`` - per-attribute scores and descriptions (as ``explain``);
* ``POST /critique`` - generated critiques (a VILA-P model);
* ``GET /models`` - the model served, what it outputs, the limits;
* ``GET /healthz`` - liveness, requests in flight, the batcher's queue;
* ``GET /openapi.json`` and ``GET /docs`` - the API (the page is served
  from here: no CDN);
* ``GET /`` - the web page: drop photos, see them ranked.

**Batching.** ``/score`` requests decode their files in threads and hand
the pixels to one :class:`Batcher`, whose thread runs the model on up to
``batch_size`` images at a time, from however many requests, waiting at most
``max_wait_ms`` for a batch to fill: under load, batches are full and
throughput approaches offline scoring; alone, a request waits a few ms.

**Limits**, each a 4xx with a JSON ``{"error": ...}``: a request body
larger than allowed (413, checked from Content-Length before reading, and
while it streams where a chunked upload sends none), a
file larger than ``max_upload_bytes`` (413), an image of more than
``max_pixels`` pixels (413, read from the header before decoding), more
than ``max_files`` files (413), more requests in flight than
``max_in_flight`` (429), a file that is not an image (415) or is damaged
(422). A request of several files where only some are bad gets 200 and a
row per file with its status, as the CLI does; only when every file failed
is the answer a 4xx (it still carries the rows). A request that takes
longer than ``timeout_s`` is answered 503. Nothing a request sends can stop
the server: any other exception is a 500 for that request alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import File, UploadFile  # module level: the endpoints' annotations name them
from fastapi import HTTPException

from .data.images import ImageError, decode_for, open_image
from .errors import UsageError
from .pipeline import ScoreRow, fill_rows

WEB_DIR = Path(__file__).with_name("web")

#: HTTP status per image error kind (a request whose files all failed)
STATUS_OF_KIND = {"not_image": 415, "empty": 422, "truncated": 422, "corrupt": 422, "too_large": 413,
                  "missing": 422, "unreadable": 422}


@dataclass
class Limits:
    max_upload_bytes: int = 32 << 20
    max_pixels: int = 64_000_000
    max_files: int = 64
    max_in_flight: int = 64
    timeout_s: float = 60.0

    @property
    def max_request_bytes(self) -> int:
        return self.max_upload_bytes * self.max_files + (1 << 20)


class Batcher:
    """One thread that runs the model on batches gathered from concurrent
    requests: ``await submit(pixels, row)`` fills ``row`` (a
    :class:`ScoreRow`) with the model's outputs."""

    def __init__(self, critic, batch_size: int = 32, max_wait_ms: float = 5.0, lock: threading.Lock | None = None):
        self.critic, self.batch_size, self.max_wait = critic, batch_size, max_wait_ms / 1000.0
        self.lock = lock or threading.Lock()
        self.queue: queue.Queue = queue.Queue()
        self.batches = 0
        self.images = 0
        self._thread = threading.Thread(target=self._run, name="photocritic-batcher", daemon=True)
        self._thread.start()

    async def submit(self, pixels: np.ndarray, row: ScoreRow) -> ScoreRow:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.queue.put((pixels, row, fut, loop))
        return await fut

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.batch_size:
                left = deadline - time.monotonic()
                try:
                    item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            self._score(batch)

    def _score(self, batch) -> None:
        try:
            pixels = torch.from_numpy(np.stack([b[0] for b in batch]))
            with self.lock:
                out = self.critic.outputs_from_embeddings(self.critic.embed(pixels))
            fill_rows([b[1] for b in batch], out)
            self.batches += 1
            self.images += len(batch)
            for _, row, fut, loop in batch:
                loop.call_soon_threadsafe(_resolve, fut, row, None)
        except BaseException as exc:  # noqa: BLE001 - every waiting request hears of it
            for _, _, fut, loop in batch:
                loop.call_soon_threadsafe(_resolve, fut, None, exc)

    def close(self) -> None:
        self.queue.put(None)


def _resolve(fut, value, exc) -> None:
    if fut.done():  # the request timed out meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


def rss_mb() -> float:
    """This process's resident memory, MB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def capabilities(critic) -> dict:
    """What the served model can do, for /models and the page."""
    from .captioning import check_captioner
    from .explaining import Explainer

    caps = {"explain": True, "critique": True, "why_not": {}}
    for name, check in (("explain", lambda: Explainer(critic, describe=False)), ("critique", lambda: check_captioner(critic))):
        try:
            check()
        except UsageError as exc:
            caps[name], caps["why_not"][name] = False, str(exc)
        except Exception:  # noqa: BLE001 - a model kind the check does not know (an ONNX file)
            caps[name], caps["why_not"][name] = False, f"model {critic.name} cannot {name}"
    # mutual-information decoding needs the reference images `pretrain vila-p` saves with the model
    caps["critique_pmi"] = caps["critique"] and critic.encoder.reference_pixels() is not None
    return caps


def create_app(critic, limits: Limits | None = None, batch_size: int = 32, max_wait_ms: float = 5.0,
               decode_threads: int | None = None):
    """The FastAPI application serving ``critic`` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    limits = limits or Limits()
    if getattr(critic, "reads_tokens", False):
        raise UsageError(f"model {critic.name} reads comments; the server scores images only")
    lock = threading.Lock()
    batcher = Batcher(critic, batch_size=batch_size, max_wait_ms=max_wait_ms, lock=lock)
    decoders = ThreadPoolExecutor(max_workers=decode_threads or max(2, os.cpu_count() or 2),
                                  thread_name_prefix="photocritic-decode")
    model_jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="photocritic-model")
    caps = capabilities(critic)
    extra = tuple(critic.extra_columns)
    state = {"in_flight": 0, "requests": 0, "started": time.time()}
    try:  # load the tower and compute the text side (prompts) once, before the first request
        critic.outputs_from_embeddings(critic.embed(torch.zeros((1, *critic.preprocess.output_size, 3),
                                                                dtype=torch.uint8)))
    except Exception:  # noqa: BLE001 - the first request reports it
        pass

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()
        decoders.shutdown(wait=False)
        model_jobs.shutdown(wait=False)

    app = FastAPI(title="photocritic", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Score, explain and critique the aesthetics of photos.")
    app.state.batcher, app.state.limits = batcher, limits

    def error(status: int, message: str, **more):
        return JSONResponse({"error": message, **more}, status_code=status)

    # inside the guard below (added first, so nearer the app): a limit raised from
    # the guard's own receive would reach the body parser wrapped in an ExceptionGroup
    app.add_middleware(_BodyLimit, limits=limits)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.method != "POST":
            return await call_next(request)
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return error(400, f"bad Content-Length {length!r}")
            if n > limits.max_request_bytes:
                return error(413, f"request body of {n} bytes; the limit is {limits.max_request_bytes} "
                                  f"({limits.max_files} files of {limits.max_upload_bytes} bytes)")
        if state["in_flight"] >= limits.max_in_flight:
            return JSONResponse({"error": f"{state['in_flight']} requests in flight (limit "
                                          f"{limits.max_in_flight}); retry shortly"}, status_code=429,
                                headers={"Retry-After": "1"})
        state["in_flight"] += 1
        state["requests"] += 1
        try:
            return await asyncio.wait_for(call_next(request), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            return error(503, f"the request took longer than {limits.timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - one request fails, never the server
            return error(500, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            state["in_flight"] -= 1

    @app.exception_handler(_BodyTooLarge)
    async def too_large(request: Request, exc: _BodyTooLarge):
        return error(413, f"request body of more than {limits.max_request_bytes} bytes (sent without "
                          f"Content-Length; refused after {exc.seen} bytes); the limit is "
                          f"{limits.max_files} files of {limits.max_upload_bytes} bytes")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error(422, "malformed request: send multipart/form-data with one or more image files in "
                          "the field 'files'", detail=[{k: str(v) for k, v in d.items() if k != "ctx"}
                                                        for d in exc.errors()])

    @app.exception_handler(UsageError)
    async def usage(request: Request, exc: UsageError):
        return error(400, str(exc))

    async def read_uploads(files: list[UploadFile]) -> list[tuple[str, bytes | None, str, str]]:
        """(name, bytes, kind, message): bytes None where the upload is refused."""
        if len(files) > limits.max_files:
            raise _Refused(413, f"{len(files)} files in one request; the limit is {limits.max_files}")
        out = []
        for k, f in enumerate(files):
            name = f.filename or f"upload-{k}"
            data = await f.read(limits.max_upload_bytes + 1)
            if len(data) > limits.max_upload_bytes:
                out.append((name, None, "too_large", f"{name}: larger than the upload limit of "
                                                       f"{limits.max_upload_bytes} bytes"))
            elif not data:
                out.append((name, None, "empty", f"{name}: file is empty (0 bytes)"))
            else:
                out.append((name, data, "", ""))
        return out

    def check_pixels(name: str, data: bytes) -> None:
        """ImageError ``too_large`` past the server's pixel limit, read from the header."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size
        except Exception:  # noqa: BLE001 - the decoder names the real problem afterwards
            return
        if w * h > limits.max_pixels:
            raise ImageError("too_large", f"{name}: {w}x{h} is {w * h} pixels; the server's limit is "
                                          f"{limits.max_pixels}")

    def decode(name: str, data: bytes) -> np.ndarray:
        check_pixels(name, data)
        return decode_for(data, critic.preprocess, name)

    def open_checked(name: str, data: bytes):
        check_pixels(name, data)
        return open_image(data, name)

    def answer(rows, body: dict) -> JSONResponse:
        """200, or, when every file failed, the 4xx of their kind (422 for a mix), rows included."""
        failed = [r for r in rows if r.status != "ok"]
        if rows and len(failed) == len(rows):
            codes = {STATUS_OF_KIND.get(r.status, 422) for r in failed}
            return JSONResponse({"error": "; ".join(r.error for r in failed[:5]), **body},
                                status_code=codes.pop() if len(codes) == 1 else 422)
        return JSONResponse(body)

    @app.post("/score", summary="Score photos (1-10)")
    async def score(files: list[UploadFile] = File(...)):
        try:
            uploads = await read_uploads(files)
        except _Refused as exc:
            return error(exc.status, exc.message)
        loop = asyncio.get_running_loop()
        rows = [ScoreRow(path=name) for name, *_ in uploads]

        async def one(row: ScoreRow, data, kind, message):
            if data is None:
                row.status, row.error = kind, message
                return
            try:
                pixels = await loop.run_in_executor(decoders, decode, row.path, data)
            except ImageError as exc:
                row.status, row.error = exc.kind, exc.message
                return
            await batcher.submit(pixels, row)

        await asyncio.gather(*(one(r, d, k, m) for r, (_, d, k, m) in zip(rows, uploads)))
        return answer(rows, {"model": critic.name, "rows": [r.as_dict(extra) for r in rows]})

    async def whole_model_job(files, fn):
        """Decode to PIL and run ``fn(images)`` (explain / critique) on the model thread."""
        uploads = await read_uploads(files)
        names = [u[0] for u in uploads]
        images, where, refused = [], [], {}
        for k, (name, data, kind, message) in enumerate(uploads):
            if data is None:
                refused[k] = (kind, message)
                continue
            try:  # the limit, then the scoring path's decoder and its error kinds (off the event loop)
                im = await asyncio.get_running_loop().run_in_executor(decoders, open_checked, name, data)
            except ImageError as exc:
                refused[k] = (exc.kind, exc.message)
                continue
            images.append(im)
            where.append(k)

        def run():
            with lock:
                return fn(images) if images else []

        got = await asyncio.get_running_loop().run_in_executor(model_jobs, run)
        return names, got, where, refused

    def merged(names, got, where, refused, make_row):
        rows = [None] * len(names)
        for k, r in zip(where, got):
            r.path = names[k]
            if r.status != "ok" and r.error.startswith("<image"):
                r.error = names[k] + r.error[r.error.index(">") + 1:]
            rows[k] = r
        for k, (kind, message) in refused.items():
            rows[k] = make_row(names[k], kind, message)
        return rows

    @app.post("/explain", summary="Per-attribute scores and descriptions")
    async def explain(files: list[UploadFile] = File(...)):
        from .explaining import ExplainRow

        if not caps["explain"]:
            return error(400, caps["why_not"]["explain"])
        try:
            names, got, where, refused = await whole_model_job(files, lambda ims: critic.explain(ims))
        except _Refused as exc:
            return error(exc.status, exc.message)
        attrs = tuple(getattr(got, "names", ()) or ())
        rows = merged(names, got, where, refused,
                      lambda n, kind, msg: ExplainRow(path=n, status=kind, error=msg, names=attrs))
        return answer(rows, {"model": critic.name, "attributes": list(attrs),
                             "descriptions": getattr(got, "source", None), "rows": [r.as_dict() for r in rows]})

    @app.post("/critique", summary="Generated critiques (VILA-P models)")
    async def critique(files: list[UploadFile] = File(...), max_tokens: int = 32, pmi: int = 0):
        """``pmi`` K > 0: mutual-information decoding with K samples per
        image (at most 32) over the reference images saved with the model."""
        from .captioning import CritiqueRow

        if not caps["critique"]:
            return error(400, caps["why_not"]["critique"])
        if pmi < 0 or pmi > 32:
            return error(400, f"pmi: samples per image, 0 (greedy) to 32, not {pmi}")
        if pmi and not caps["critique_pmi"]:
            return error(400, f"model {critic.name} has no reference images for mutual-information decoding "
                              f"(`photocritic pretrain vila-p` saves them)")
        settings = {"samples": pmi} if pmi else None
        try:
            names, got, where, refused = await whole_model_job(
                files, lambda ims: critic.critique(ims, max_tokens=min(max(1, max_tokens), 64), pmi=settings))
        except _Refused as exc:
            return error(exc.status, exc.message)
        rows = merged(names, got, where, refused, lambda n, kind, msg: CritiqueRow(path=n, status=kind, error=msg))
        return answer(rows, {"model": critic.name, "rows": [r.as_dict() for r in rows]})

    @app.get("/models", summary="The model served and the server's limits")
    async def models():
        head = critic.head if not callable(getattr(critic, "_head", None)) else critic._head()
        attributes = [c for c in extra if c != "distribution" and c != "context_class"]
        return {"models": [{"name": critic.name, "description": getattr(critic, "description", ""),
                            "method": getattr(head, "name", None) or ("onnx" if head is None else "zeroshot"),
                            "distribution": "distribution" in extra, "attributes": attributes,
                            "explain": caps["explain"], "critique": caps["critique"],
                            "critique_pmi": caps["critique_pmi"]}],
                "limits": {**asdict(limits), "max_request_bytes": limits.max_request_bytes},
                "batching": {"batch_size": batcher.batch_size, "max_wait_ms": batcher.max_wait * 1000}}

    @app.get("/healthz", summary="Liveness and load")
    async def healthz():
        return {"status": "ok", "model": critic.name, "in_flight": state["in_flight"],
                "requests": state["requests"], "queued": batcher.queue.qsize(), "batches": batcher.batches,
                "images": batcher.images, "rss_mb": round(rss_mb(), 1),
                "uptime_s": round(time.time() - state["started"], 1)}

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(WEB_DIR / "docs.html", media_type="text/html")

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse((WEB_DIR / "index.html").read_text(encoding="utf-8"))

    return app


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a POST body passes the limit. An
    HTTPException, so that FastAPI's body parsing passes it on (it turns
    other exceptions into a 400) to the app's handler, which answers 413."""

    def __init__(self, seen: int):
        super().__init__(413)
        self.seen = seen


class _BodyLimit:
    """ASGI middleware counting a POST body's bytes as they arrive: a chunked
    upload has no Content-Length to refuse it by, so the part of it past
    ``limits.max_request_bytes`` is never read (nor spooled to disk)."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limits.max_request_bytes:
                    raise _BodyTooLarge(seen)
            return message

        await self.app(scope, counted, send)


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _version() -> str:
    from . import __version__

    return __version__


def serve(critic, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          batch_size: int = 32, max_wait_ms: float = 5.0, log_level: str = "warning") -> None:
    """Run the server until interrupted."""
    import uvicorn

    app = create_app(critic, limits, batch_size=batch_size, max_wait_ms=max_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
