"""The HTTP service over a saved model and a search index: a FastAPI app.

    app = create_app(Path("runs/world/model"), Path("world-index"), token="s3cret")
    uvicorn.run(app, host="127.0.0.1", port=8000)   # or: omnifuse serve MODEL --index INDEX

The model and the index load once, here. Routes are plain `def` functions, which FastAPI runs
in its thread pool, so a request waiting for the model never holds up the event loop. One lock
keeps the model to one call at a time (torch's own threads parallelise each call), and the
searches waiting for it run as one batch (`batching.Batcher`). Every refusal is a 4xx with
`{"detail": "one line"}`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from omnifuse.data.dataset import Readers
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.inference import embed_rows, predict_rows
from omnifuse.model import OmnifuseModel
from omnifuse.registry import closest
from omnifuse.retrieval import Hit, Index, open_index, search
from omnifuse.retrieval import Query as SearchQuery
from omnifuse.retrieval.store import POINTER
from omnifuse.serve.batching import Batcher
from omnifuse.serve.guard import Guard
from omnifuse.serve.uploads import (
    Inputs,
    Limits,
    RequestError,
    Stored,
    Upload,
    request_folder,
    samples_of,
    suffix_kinds,
)

STATIC = Path(__file__).parent / "static"
T = TypeVar("T")


class Service:
    """What every request shares: the model, its readers, the index, the limits, the lock."""

    def __init__(self, model_dir: Path, index_dir: Path | None, limits: Limits) -> None:
        self.model = OmnifuseModel.from_pretrained(model_dir)
        self.readers = Readers.of(self.model.config)
        self.index: Index | None = None
        if index_dir is not None:
            self.index = open_index(index_dir)
            self.index.check_model(model_dir)
        self.index_dir = index_dir.resolve() if index_dir is not None else None
        self.files = files_of(self.index)
        self.reopening = threading.Lock()
        self.limits = limits
        self.suffixes = suffix_kinds(self.readers.modalities)
        self.lock = threading.Lock()
        self.batcher = Batcher(self.search_batch) if self.index is not None else None

    def search_batch(
        self, queries: Sequence[SearchQuery], k: int, where: Mapping[str, str]
    ) -> list[list[Hit]]:
        """Several queries' hits in one model call and one index lookup."""
        index = self.searchable()
        return self.locked(lambda: search(index, self.model, queries, k=k, where=where))

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def locked(self, call: Callable[[], T]) -> T:
        """`call()` while holding the model: one request at a time."""
        with self.lock:
            return call()

    def searchable(self) -> Index:
        """The index's live version: after `omnifuse index add` or `remove` switched it to a
        new one, that one (opened once, by the first request to see the switch)."""
        if self.index is None or self.batcher is None or self.index_dir is None:
            raise RequestError(404, "no index is loaded: start the server with --index")
        try:
            live = (self.index_dir / POINTER).read_text().strip()
        except OSError:  # mid-switch or gone: keep serving the version loaded
            return self.index
        if live != self.index.version:
            with self.reopening:
                if live != self.index.version:
                    index = open_index(self.index_dir)
                    self.files = files_of(index)
                    self.index = index
        return self.index

    @contextmanager
    def inputs(self) -> Iterator[Inputs]:
        """A request's upload folder, deleted when the request is done; an OmnifuseError
        raised inside names the uploads rather than their temporary paths."""
        with request_folder() as folder:
            inputs = Inputs(folder, self.limits, self.suffixes)
            try:
                yield inputs
            except OmnifuseError as error:
                raise type(error)(inputs.named(str(error))) from None


def files_of(index: Index | None) -> frozenset[str]:
    """The files /files serves: the indexed rows' own, by the path their hits give."""
    rows = index.rows if index is not None else None
    listed = rows.column("file").to_pylist() if rows and "file" in rows.column_names else []
    return frozenset(f for f in listed if f)


def create_app(
    model_dir: Path,
    index_dir: Path | None,
    *,
    token: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The app serving the model in `model_dir` and the index in `index_dir` (None: only
    /health, /embed, /predict and the page); with `token`, every route but /health needs
    `Authorization: Bearer <token>` (or the cookie the page sets from `/?token=<token>`)."""
    service = Service(Path(model_dir), index_dir, limits or Limits())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPIOffline(  # /docs and /redoc with their scripts served here: no CDN
        lifespan=lifespan,
        title="omnifuse",
        summary="Search a collection and run a multimodal model over HTTP.",
        description=(
            "Search by text or by an uploaded image or sound, embed inputs, and predict the "
            "model's tasks. With a token, send `Authorization: Bearer TOKEN`."
        ),
    )
    app.state.service = service
    add_handlers(app)
    add_routes(app, service)
    app.add_middleware(Guard, token=token, body_bytes=service.limits.body_bytes)
    return app


def add_handlers(app: FastAPI) -> None:
    """Every error as a short JSON line: the project's errors by type, request errors by
    their status, FastAPI's validation errors as their first problem."""

    @app.exception_handler(RequestError)
    def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(OmnifuseError)
    def omnifuse_error(request: Request, error: OmnifuseError) -> JSONResponse:
        status = 422 if isinstance(error, ConfigError) else 400
        return JSONResponse({"detail": one_line(str(error))}, status_code=status)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_line(error.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, error: HTTPException) -> JSONResponse:
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        return JSONResponse(
            {"detail": one_line(detail)}, status_code=error.status_code, headers=error.headers
        )


def one_line(message: str) -> str:
    return " ".join(message.split())


def validation_line(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors as one line: 'k: Input should be a valid integer' (and how
    many more)."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
    message = str(first.get("msg", "invalid"))
    if first.get("type") == "missing":
        message = "missing (a required field)"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return one_line(f"{where or 'request'}: {message}{more}")


def plain(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become null, tuples lists, other objects text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # a numpy or torch scalar
        return plain(value.item())
    return str(value)


def parse_where(items: Sequence[str], index: Index) -> dict[str, str]:
    """`column=value` filters, each column one of the index's metadata columns."""
    where = {}
    for item in items:
        column, equals, value = item.partition("=")
        column = column.strip()
        if not equals or not column:
            raise RequestError(422, f"where {item!r:.60}: expected column=value")
        filterable = ["id", *index.columns]
        if column not in filterable:
            raise RequestError(
                400,
                f"where: no column '{column}'{closest(column, filterable)} in the index "
                f"(its columns: {', '.join(filterable)})",
            )
        where[column] = value
    return where


def index_info(index: Index | None) -> dict[str, Any] | None:
    """What the page shows of the index: no server paths, no model fingerprints."""
    if index is None:
        return None
    keep = ("version", "size", "kind", "modality", "task", "columns", "dim", "built")
    return plain({key: value for key, value in index.info().items() if key in keep})


def file_url(file: str | None) -> str | None:
    return None if file is None else "/files/" + quote(file)


def run_search(
    service: Service,
    text: str | None,
    upload: Upload | None,
    k: int,
    where: Sequence[str],
    modality: str | None,
) -> dict[str, Any]:
    """The hits of one query: a text or one uploaded file, never both, never neither."""
    index = service.searchable()
    limits = service.limits
    if not 1 <= k <= limits.k:
        raise RequestError(422, f"k: must be between 1 and {limits.k}, got {k}")
    filters = parse_where(where, index)
    text = text.strip() if text is not None else None
    if not text and upload is None:
        raise RequestError(400, "empty query: give a text (q) or a file to search by")
    if text and upload is not None:
        raise RequestError(400, "give a text or a file to search by, not both")
    if text and len(text) > limits.text_chars:
        raise RequestError(422, f"q: longer than {limits.text_chars} characters")
    with service.inputs() as inputs:
        stored = inputs.store(upload) if upload is not None else None
        query = (
            SearchQuery(text=text, modality=modality)
            if stored is None
            else SearchQuery(file=stored.path, modality=modality)
        )
        assert service.batcher is not None  # searchable: an index, so a batcher
        hits = service.batcher.submit(query, k, filters)
    return {
        "query": {"text": text, "file": stored.name if stored else None},
        "k": k,
        "where": filters,
        "hits": [
            {
                "rank": hit.rank,
                "id": hit.id,
                "score": plain(hit.score),
                "file": hit.file,
                "url": file_url(hit.file),
                "metadata": plain(hit.metadata),
            }
            for hit in hits
        ],
    }


def model_inputs(
    service: Service,
    texts: Sequence[str],
    files: Sequence[UploadFile],
    modality: str | None,
    run: Callable[[list[Any]], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """`run(samples)` on the request's texts and files, one sample each."""
    limits = service.limits
    if not texts and not files:
        raise RequestError(400, "no inputs: give one or more texts (text) or files (files)")
    if len(files) > limits.files:
        raise RequestError(413, f"files: more than {limits.files} in one request")
    if len(texts) > limits.texts:
        raise RequestError(413, f"text: more than {limits.texts} in one request")
    for text in texts:
        if not text.strip():
            raise RequestError(400, "text: an empty text")
        if len(text) > limits.text_chars:
            raise RequestError(422, f"text: longer than {limits.text_chars} characters")
    with service.inputs() as inputs:
        stored: list[Stored] = [inputs.store(Upload(f.filename, f.file)) for f in files]
        samples = samples_of(service.readers, inputs.folder, texts, stored, modality=modality)
        return service.locked(lambda: run(samples))


def served_file(service: Service, path: str) -> Path:
    """The collection's file at `path` (relative to the index's root), which must be the file
    of an indexed row and whose real path, symlinks followed, must lie inside the root and
    outside the index's own folder."""
    index = service.searchable()
    root = index.root.resolve()
    missing = RequestError(404, f"no file {path!r:.80} in the collection")
    if path not in service.files:
        raise missing
    try:
        real = (root / path).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise missing from None
    inside = real.is_relative_to(root) and real != root
    in_index = service.index_dir is not None and real.is_relative_to(service.index_dir)
    if not inside or in_index or not real.is_file():
        raise missing
    return real


TextField = Annotated[str | None, Form(description="Text to search by.")]
FileField = Annotated[UploadFile | None, File(description="An image or sound to search by.")]
KField = Annotated[int, Form(description="How many results.")]
WhereField = Annotated[list[str], Form(description="Filters, each column=value.")]
ModalityField = Annotated[
    str | None, Form(description="The model's modality that reads the query or inputs.")
]


def add_routes(app: FastAPI, service: Service) -> None:
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Whether the server is up (open even with a token)."""
        return {"status": "ok", "index": service.index is not None}

    @app.get("/info", tags=["service"])
    def info() -> dict[str, Any]:
        """The model's modalities and tasks, the index and the request limits."""
        model = service.model
        index = service.searchable() if service.index is not None else None
        return {
            "modalities": {n: m.config.kind for n, m in sorted(model.modalities.items())},
            "tasks": sorted(model.task_dict()),
            "suffixes": service.suffixes,
            "index": index_info(index),
            "columns": index.columns if index is not None else [],
            "limits": vars(service.limits) | {"body_bytes": service.limits.body_bytes},
        }

    @app.get("/search", tags=["search"])
    def search_text(
        q: Annotated[str | None, Param(description="Text to search by.")] = None,
        k: Annotated[int, Param(description="How many results.")] = 10,
        where: Annotated[list[str], Param(description="Filters, each column=value.")] = [],  # noqa: B006
        modality: Annotated[str | None, Param(description="The query's modality.")] = None,
    ) -> dict[str, Any]:
        """The k items of the index nearest to a text, with their scores and metadata."""
        return run_search(service, q, None, k, where, modality)

    @app.post("/search", tags=["search"])
    def search_upload(
        text: TextField = None,
        file: FileField = None,
        k: KField = 10,
        where: WhereField = [],  # noqa: B006
        modality: ModalityField = None,
    ) -> dict[str, Any]:
        """The k items of the index nearest to a text or an uploaded image or sound."""
        upload = Upload(file.filename, file.file) if file is not None else None
        return run_search(service, text, upload, k, where, modality)

    @app.post("/embed", tags=["model"])
    def embed(
        text: Annotated[list[str], Form(description="Texts to embed.")] = [],  # noqa: B006
        files: Annotated[list[UploadFile], File(description="Files to embed.")] = [],  # noqa: B006
        task: Annotated[str | None, Form(description="The alignment task's space.")] = None,
        modality: ModalityField = None,
    ) -> dict[str, Any]:
        """Each input's embedding in the shared space of an alignment task:
        {"rows": [{"id": ..., modality: [numbers]}]}."""
        rows = model_inputs(
            service, text, files, modality, lambda s: list(embed_rows(service.model, s, task=task))
        )
        return {"rows": rows}

    @app.post("/predict", tags=["model"])
    def predict(
        text: Annotated[list[str], Form(description="Texts to predict from.")] = [],  # noqa: B006
        files: Annotated[list[UploadFile], File(description="Files to predict from.")] = [],  # noqa: B006
        modality: ModalityField = None,
    ) -> dict[str, Any]:
        """Every task's prediction for each input, as `omnifuse predict` prints them."""
        rows = model_inputs(
            service, text, files, modality, lambda s: list(predict_rows(service.model, s))
        )
        return {"rows": plain(rows)}

    @app.get("/files/{path:path}", tags=["search"], response_class=FileResponse)
    def files(path: str) -> FileResponse:
        """A file of the collection (a result's `url`), from inside its root only."""
        return FileResponse(served_file(service, path))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page)
