"""The HTTP server (issue 9): a native jobs API (/api/v1) and an AUTOMATIC1111-compatible /sdapi/v1.

Files, one concern each: settings.py (options), app.py (``create_app``), jobs.py (SQLite WAL store +
files), worker.py (the one generation thread), registry.py (models), schemas.py (native shapes derived
from request.PARAMS), native.py and sdapi.py (routes), inputs.py (base64 and image limits), auth.py and
limits.py (middleware), errors.py (typed errors -> HTTP), preview.py (latent previews), command.py
(``depth2img serve``). FastAPI is imported only when the server is used.
"""
