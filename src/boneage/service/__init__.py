"""The HTTP service (``boneage serve``): a FastAPI app with a web page, on uvicorn.

See :func:`boneage.service.app.create_app` for the app and :func:`boneage.service.server.serve`
for running it.
"""

from boneage.service.app import DEFAULT_MAX_UPLOAD_BYTES, create_app

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "create_app"]
