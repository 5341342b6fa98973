"""The HTTP service: a FastAPI app that assesses uploaded radiographs with one loaded model.

>>> from boneage.service import create_app
>>> app = create_app()              # the bundled model, loaded in the background at startup

Endpoints (see ``/docs``): ``POST /v1/predict`` (JSON), ``POST /v1/report`` (PDF),
``GET /v1/model``, ``GET /health``, and the web page at ``/``.

What the service guarantees, and why:

* The model is loaded once, in a background thread when the app starts, so the server
  answers at once: 503 while loading, then every request shares the one model (inference in
  eval mode without gradients state-free, so concurrent requests are safe).
* Predictions run in a thread pool bounded by ``workers``, each thread with ``threads`` torch
  CPU threads: ``workers * threads`` cores at most, however many requests arrive, so
  concurrent requests queue instead of thrashing the CPU.
* Uploads are parsed in memory (never written to disk), the size limit is enforced while the
  body streams in, and a body that stops arriving is cut off (see :mod:`.upload`).
* Every error is JSON ``{"detail": "one message"}``, never a traceback. The access log carries
  method, path without query string, status and time; never a form field or file name.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import struct
import sys
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from boneage import __version__, api
from boneage.clinical import parse_date
from boneage.errors import BoneAgeError, InputError, QualityRefusal, SexUnknown
from boneage.inference import Predictor
from boneage.inference.modelfile import validation_mae
from boneage.io.image import read_image_bytes
from boneage.io.types import check_size
from boneage.reporting.report import overlay_png, write_pdf
from boneage.service.upload import ServiceError, read_form
from boneage.sex import Sex
from boneage.units import rounded
from boneage.visualize import OVERLAY_MAX_SIDE, fit_for_display, overlay_rgb

logger = logging.getLogger("boneage.service")
access_logger = logging.getLogger("boneage.service.access")

#: Default upload limit: a large uncompressed DICOM radiograph (4k x 4k, 16 bit) is ~32 MiB.
DEFAULT_MAX_UPLOAD_BYTES = 64 * 2**20
#: The form fields of /v1/predict and /v1/report besides the file.
FORM_FIELDS = ("sex", "birth_date", "study_date", "age_months", "force", "heatmap", "radiograph")
#: How to give the sex to the service (a file without a DICOM PatientSex tag needs it).
SEX_HINT = "send the form field sex=M or sex=F (on the page: choose the sex)"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def default_workers() -> int:
    """Concurrent predictions by default: the cores, at most 4 (more only queue in memory)."""
    return max(1, min(4, os.cpu_count() or 1))


class ModelHolder:
    """The service's one model: loaded once in a background thread, then shared."""

    def __init__(self, model, threads: int):
        self.source = model
        self.threads = threads
        self.predictor = None
        self.error: str | None = None
        self.ready = threading.Event()
        self._local = threading.local()
        self.load_seconds: float | None = None

    def load(self) -> None:
        """Load the model (the bundled one for None); a failure is kept as a message."""
        start = time.perf_counter()
        try:
            # threads: onnxruntime's per session, or torch.set_num_threads for a PyTorch file
            self.predictor = api.load_predictor(self.source, threads=self.threads)
            self.load_seconds = time.perf_counter() - start
            logger.info("model %s loaded in %.1f s", self.predictor.recipe.name, self.load_seconds)
        except BoneAgeError as exc:
            self.error = str(exc)
            logger.error("model could not be loaded: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a broken file must not kill the server silently
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("model could not be loaded")
        finally:
            self.ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading has finished (or failed); True when a model is there."""
        self.ready.wait(timeout)
        return self.predictor is not None

    def bound_threads(self) -> None:
        """Limit torch's CPU threads for the calling thread (once per thread), when the model
        runs in PyTorch; an ONNX session has its own thread count (set when loading).

        OpenMP keeps the thread count per calling thread, so every pool thread sets it for
        itself; torch.set_num_threads also sets the process-wide intra-op pool.
        """
        if getattr(self._local, "bounded", False):
            return
        if "torch" in sys.modules:  # imported by a PyTorch model; never imported here for ONNX
            sys.modules["torch"].set_num_threads(self.threads)
        self._local.bounded = True

    def require(self):
        """The predictor, else 503 with why there is none."""
        if self.predictor is not None:
            return self.predictor
        if self.error is not None:
            raise ServiceError(503, f"the model could not be loaded: {self.error}")
        raise ServiceError(503, "the model is loading; retry in a few seconds", {"Retry-After": "5"})


# -- request fields ----------------------------------------------------------------------

def _bool_field(fields: dict, name: str) -> bool:
    text = fields.get(name, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ServiceError(422, f"{name} must be true or false, got {fields[name]!r}")


def parse_fields(fields: dict) -> dict:
    """The form fields as arguments of :func:`boneage.api.predict`, checked before any image
    work: 422 naming the field for an unknown field, a bad sex, date, age or flag."""
    unknown = sorted(set(fields) - set(FORM_FIELDS))
    if unknown:
        raise ServiceError(422, f"unknown form field {unknown[0]!r}; the fields are file, {', '.join(FORM_FIELDS)}")
    out: dict = {name: _bool_field(fields, name) for name in ("force", "heatmap", "radiograph")}
    try:
        sex = fields.get("sex", "").strip()
        out["sex"] = Sex.parse(sex) if sex else None
        for name in ("birth_date", "study_date"):
            value = fields.get(name, "").strip()
            out[name] = parse_date(value, name) if value else None
    except InputError as exc:
        raise ServiceError(422, exc.problem) from None
    age = fields.get("age_months", "").strip()
    out["age_months"] = None
    if age:
        try:
            out["age_months"] = float(age)
        except ValueError:
            raise ServiceError(422, f"age_months must be a number of months, got {age!r}") from None
    return out


# -- image work (in the thread pool) -----------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_declared_size(data: bytes) -> None:
    """Refuse a PNG whose header declares an image over the pixel limit before decoding it:
    a tiny file can declare 100000 x 100000 pixels (a decompression bomb)."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        check_size(height, width, "upload")


def decode_upload(data: bytes):
    """A :class:`~boneage.io.LoadedImage` of the uploaded bytes, decoded in memory.

    Raises ServiceError: 415 for data that is no image format we read, 422 for an image we
    recognise but cannot use (empty, truncated, no pixels, a volume, too small or large).
    """
    try:
        _check_declared_size(data)
        return read_image_bytes(data, name="upload")
    except InputError as exc:
        unknown = "not a recognised image format" in exc.problem or exc.problem.startswith("not an image")
        status = 415 if unknown else 422
        raise ServiceError(status, exc.problem) from None


def _sex_source(given, loaded) -> str:
    if given is not None:
        return "given"
    if loaded.metadata.sex is not None:
        return "DICOM PatientSex"
    return "not used by this model"


def _png_base64(rgb_or_gray) -> str:
    arr = np.asarray(rgb_or_gray)
    if arr.ndim == 2:
        arr = np.repeat(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    return base64.b64encode(overlay_png(arr)).decode("ascii")


def run_prediction(predictor, data: bytes, args: dict) -> dict:
    """Decode, screen, predict and (when asked) explain one upload; the JSON response."""
    loaded = decode_upload(data)
    try:
        prediction = api.predict(loaded, args["sex"], model=predictor, birth_date=args["birth_date"],
                                 study_date=args["study_date"], age_months=args["age_months"],
                                 force=args["force"])
    except QualityRefusal as exc:
        raise ServiceError(422, f"not assessed: {exc.reason} (send force=true to assess it anyway)") from None
    except SexUnknown as exc:
        raise ServiceError(422, exc.telling(SEX_HINT).problem) from None
    except InputError as exc:
        raise ServiceError(422, exc.problem) from None
    out = prediction.to_dict()
    out["sex_source"] = _sex_source(args["sex"], loaded)
    h, w = loaded.pixels.shape
    out["image"] = {"format": loaded.metadata.format, "width": int(w), "height": int(h)}
    if args["heatmap"] and predictor.gradcam_unavailable:
        out["heatmap_unavailable"] = predictor.gradcam_unavailable
    if args["radiograph"] and not (args["heatmap"] and predictor.gradcam_unavailable is None):
        # The pixels as assessed (the gate may have turned or inverted them), at display size:
        # the page shows the heat map only when asked, and a browser cannot show a DICOM.
        pixels, _ = predictor.screen(loaded.pixels, loaded.metadata, name="upload", force=True)
        out["radiograph_png_base64"] = _png_base64(fit_for_display(pixels, pixels, OVERLAY_MAX_SIDE)[0])
    if args["heatmap"] and predictor.gradcam_unavailable is None:
        # The map lies on the pixels the model assessed (the gate may have turned or inverted
        # them); the gate passed or was forced above, so force=True only repeats that.
        pixels, _ = predictor.screen(loaded.pixels, loaded.metadata, name="upload", force=True)
        _, heat, background = api.explain(pixels, prediction.sex, model=predictor)
        shown, _ = fit_for_display(background, heat, OVERLAY_MAX_SIDE)
        out["heatmap_png_base64"] = _png_base64(overlay_rgb(background, heat))
        out["radiograph_png_base64"] = _png_base64(shown)
    return out


def run_report(predictor, data: bytes, args: dict, filename: str | None) -> bytes:
    """The PDF report of one upload, rendered in memory."""
    loaded = decode_upload(data)
    # Name the image by its uploaded base name only (no client paths) inside the report.
    name = Path((filename or "upload").replace("\\", "/")).name or "upload"
    try:
        report = api.create_report(loaded, args["sex"], model=predictor, birth_date=args["birth_date"],
                               study_date=args["study_date"], age_months=args["age_months"],
                               force=args["force"], name=name, heatmap=args["heatmap"])
    except QualityRefusal as exc:
        raise ServiceError(422, f"not assessed: {exc.reason} (send force=true to assess it anyway)") from None
    except SexUnknown as exc:
        raise ServiceError(422, exc.telling(SEX_HINT).problem) from None
    except InputError as exc:
        raise ServiceError(422, exc.problem) from None
    buf = io.BytesIO()
    write_pdf(report, buf)  # PdfPages writes to a file object as well as to a path
    return buf.getvalue()


# -- model description -------------------------------------------------------------------

def describe_model(predictor) -> dict:
    """``GET /v1/model``: identity, recipe summary, validation MAE, interval and gate facts."""
    recipe, info = predictor.recipe, predictor.info
    inf = recipe.inference
    calibration = info.get("calibration") or {}
    gate = info.get("quality_gate") or {}
    return {
        "name": recipe.name,
        "hash": info.get("model_sha256", "")[:16],
        "sha256": info.get("model_sha256", ""),
        "description": " ".join((recipe.description or "").split()),
        "recipe": {
            "architecture": recipe.model.name,
            "task": recipe.task,
            "preprocess": [step.get("name") if isinstance(step, dict) else getattr(step, "name", str(step))
                           for step in (recipe.preprocess or [])],
            "views": (1 + len(inf.tta_angles)) * (2 if inf.flip_tta else 1),
            "aggregate": inf.aggregate,
            "uses_sex": bool(predictor.uses_sex),
        },
        "training": {key: info.get(key) for key in ("training_data", "n_train", "n_val", "epoch", "date")
                     if info.get(key) is not None},
        "validation_mae_months": rounded((validation_mae(info) or (None,))[0]),
        "interval": ({"level": calibration.get("level"), "n_calibration": calibration.get("n_calibration"),
                      "coverage": calibration.get("coverage"), "n_test": calibration.get("n_test")}
                     if calibration else None),
        "quality_gate": ({"accepted_test": gate.get("accepted_test"),
                          "rejected_test_negatives": gate.get("rejected_test_negatives")} if gate else None),
    }


# -- the app -----------------------------------------------------------------------------

_ERROR_SCHEMA = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
_ERRORS = {code: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
           for code, text in {
               408: "the request body stopped arriving",
               413: "the upload is over the size limit",
               415: "not multipart/form-data, or not an image format the service reads",
               422: "unreadable image, bad field (sex, dates, age, flags) or refused by the quality gate",
               503: "the model is loading (or could not be loaded)"}.items()}
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "PNG, JPEG, TIFF, BMP or DICOM"},
        "sex": {"type": "string", "enum": ["M", "F"], "description": "default: the DICOM PatientSex tag"},
        "birth_date": {"type": "string", "description": "YYYY-MM-DD or YYYYMMDD (default: DICOM tag)"},
        "study_date": {"type": "string", "description": "YYYY-MM-DD or YYYYMMDD (default: DICOM tags)"},
        "age_months": {"type": "number", "description": "chronological age in months, 0-240"},
        "force": {"type": "boolean", "description": "assess an image the quality gate refuses"},
        "heatmap": {"type": "boolean", "description": "also return the Grad-CAM overlay (doubles the time)"},
        "radiograph": {"type": "boolean", "description": "also return the radiograph as assessed, as a PNG "
                                                         "(e.g. to show a DICOM in a browser)"},
    }}}}}}
_PREDICTION_SCHEMA = {"type": "object", "properties": {
    "bone_age_months": {"type": "number"},
    "maturity": {"type": ["string", "null"], "description": "at the top of the Greulich-Pyle range: "
                 "what to show instead of the precise bone age; else null"},
    "sex": {"type": "string"}, "sex_source": {"type": "string"},
    "interval": {"type": "object"}, "clinical": {"type": "object"}, "quality": {"type": "object"},
    "model_name": {"type": "string"}, "model_hash": {"type": "string"}, "image": {"type": "object"},
    "heatmap_png_base64": {"type": "string"}, "heatmap_unavailable": {"type": "string"},
    "radiograph_png_base64": {"type": "string", "description": "with radiograph=true or heatmap=true"}}}


def static_dir() -> Path:
    """The web page's files, shipped inside the package."""
    return Path(str(resources.files("boneage.service") / "static"))


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the fastapi-offline package, when installed (no CDN)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).parent / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _fallback_docs() -> str:
    """A plain page listing the API from /openapi.json, for when Swagger UI's files are absent."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>boneage API</title></head>"
            "<body><h1>boneage API</h1><p>The OpenAPI schema: <a href='/openapi.json'>/openapi.json</a></p>"
            "<ul id='paths'></ul><script>fetch('/openapi.json').then(r=>r.json()).then(s=>{"
            "const ul=document.getElementById('paths');for(const [p,ops] of Object.entries(s.paths)){"
            "for(const [m,op] of Object.entries(ops)){const li=document.createElement('li');"
            "li.textContent=m.toUpperCase()+' '+p+': '+(op.summary||'');ul.appendChild(li);}}});"
            "</script></body></html>")


def create_app(model=None, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, workers: int | None = None,
               threads: int = 1, body_timeout: float = 30.0) -> FastAPI:
    """The service's FastAPI app.

    Args:
        model: a model file path, a loaded :class:`~boneage.inference.Predictor`, or None for
            the bundled model. A path is loaded in a background thread when the app starts
            (the lifespan), and requests get 503 until it is there.
        max_upload_bytes: the largest request body accepted (413 beyond it).
        workers: predictions run at once (default :func:`default_workers`); more wait.
        threads: torch CPU threads per prediction.
        body_timeout: seconds without body data before a request is cut off (408).
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    workers = default_workers() if workers is None else workers
    if workers < 1 or threads < 1:
        raise ValueError(f"workers and threads must be >= 1, got {workers} and {threads}")
    holder = ModelHolder(model, threads)
    if isinstance(model, Predictor):
        holder.predictor = model
        holder.ready.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.limiter = anyio.CapacityLimiter(workers)
        if not holder.ready.is_set():
            threading.Thread(target=holder.load, name="boneage-model-loader", daemon=True).start()
        yield

    app = FastAPI(title="boneage", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Bone age from hand radiographs. Research and clinical decision support "
                              "only; not a diagnosis.")
    app.state.model = holder
    app.state.max_upload_bytes = max_upload_bytes
    app.state.limiter = None

    async def in_pool(fn, *args):
        def call():
            holder.bound_threads()
            return fn(*args)

        limiter = app.state.limiter or anyio.CapacityLimiter(workers)
        app.state.limiter = limiter
        return await anyio.to_thread.run_sync(call, limiter=limiter)

    async def upload(request: Request) -> tuple[object, bytes, dict, str | None]:
        predictor = holder.require()  # 503 before reading a byte of the body
        form = await read_form(request, limit=max_upload_bytes, chunk_timeout=body_timeout)
        args = parse_fields(form.fields)
        if not form.file_field_seen:
            raise ServiceError(422, "no image: send it as the multipart file field 'file'")
        return predictor, form.file or b"", args, form.filename

    # -- errors: one JSON message, never a traceback --
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        logger.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
                     exc_info=exc)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)

    # -- access log: no query strings, no form fields --
    @app.middleware("http")
    async def _access_log(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            client = request.client.host if request.client else "-"
            access_logger.info("%s %s %s %d %.0f ms", client, request.method, request.url.path, status,
                               1000 * (time.perf_counter() - start))

    # -- endpoints --
    @app.get("/health", summary="Liveness and readiness", responses={503: _ERRORS[503]})
    async def health():
        """200 ``{"status": "ok"}`` once the model is loaded; 503 while it loads or if it failed."""
        if holder.predictor is None:
            holder.require()
        return {"status": "ok", "model": holder.predictor.recipe.name}

    @app.get("/v1/model", summary="The loaded model", responses={503: _ERRORS[503]})
    async def model_info():
        """Name, hash, recipe summary, validation MAE, interval calibration and quality-gate facts."""
        return describe_model(holder.require())

    @app.post("/v1/predict", summary="Bone age of one radiograph", openapi_extra=_UPLOAD_BODY,
              responses={200: {"content": {"application/json": {"schema": _PREDICTION_SCHEMA}}}, **_ERRORS})
    async def predict(request: Request):
        """Bone age with its interval, sex and its source, the reading against chronological age
        (z-score, impression) when an age is known, the quality verdict and the model's identity;
        ``heatmap=true`` adds the Grad-CAM overlay and the radiograph as base64 PNGs."""
        predictor, data, args, _ = await upload(request)
        return JSONResponse(await in_pool(run_prediction, predictor, data, args))

    @app.post("/v1/report", summary="PDF report of one radiograph", openapi_extra=_UPLOAD_BODY,
              response_class=Response,
              responses={200: {"content": {"application/pdf": {}}}, **_ERRORS})
    async def report(request: Request):
        """The same input as /v1/predict; the one-page PDF report (heat map included)."""
        predictor, data, args, filename = await upload(request)
        pdf = await in_pool(run_report, predictor, data, args, filename)
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": 'attachment; filename="bone-age-report.pdf"'})

    # -- the web page and the offline API docs --
    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse((static_dir() / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    assets = _swagger_assets()
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        if assets is None:
            return HTMLResponse(_fallback_docs())
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url=app.openapi_url, title="boneage API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")

    return app
