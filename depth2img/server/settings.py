"""The server's settings: one frozen value built by ``depth2img serve`` (or a test) and read everywhere.

Defaults follow the issue and A1111's ``--api`` habits (port 7860, loopback unless ``--listen``).
``check()`` refuses what would be unsafe before anything binds: a non-loopback address without auth
(A1111 binds 0.0.0.0 with ``--listen`` with no auth at all; ComfyUI's maintainers advise against public
instances), so exposing the server is an explicit, authenticated choice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError
from ..executors.base import ExecutorOptions

LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    models_dirs: tuple[Path, ...] = ()
    hf_cache: Path | None = None
    model: str | None = None  # default model id; None: the first one the registry lists, else "tiny"
    device: str = "cpu"
    dtype: str = "float32"
    auth: tuple[tuple[str, str], ...] = ()  # (user, password) pairs; empty = no auth
    queue_size: int = 16  # queued jobs (not counting the running one); full -> 429
    job_timeout: float = 600.0  # seconds a job may run
    outputs: Path = Path("outputs/server")
    max_pixels: int = 16 * 1024 * 1024  # per decoded input image (width x height), checked from the header
    max_body_mb: float = 64.0  # request body, checked before it is read whole
    cors_origins: tuple[str, ...] = ()
    preview_every: int = 0  # SSE/progress preview every k steps (0: off unless a client asks)
    shutdown_grace: float = 30.0  # seconds the running job may take to finish on shutdown
    retry_after: int = 5  # seconds suggested to a client that got 429
    # A1111's prompt extras (server/extras.py), as generate's --styles-file, --embeddings-dir, --lora-dir
    styles_file: Path | None = None
    embeddings_dir: Path | None = None
    lora_dir: Path | None = None
    executor: ExecutorOptions = ExecutorOptions()  # local: the worker thread runs jobs; ray: remote actors (remote.py)
    low_memory: bool = False  # --low-memory (lowmem.py), as generate's: every model load (local or Ray actor) uses it
    compile: bool = False  # --compile (compiled.py), as generate's: every model load (local or Ray actor) uses it

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def cache_dir(self) -> Path:
        return self.outputs / "cache"

    def check(self) -> Settings:
        """Raise :class:`InvalidRequestError` for settings the server must not start with."""
        if not is_loopback(self.host) and not self.auth:
            raise InvalidRequestError(
                f"refusing to listen on {self.host} without authentication: anyone on the network could use "
                "this machine; give --auth USER:PASS or --auth-file FILE, or keep --host 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise InvalidRequestError(f"--port must be in [0, 65535], got {self.port}")
        for name, value, low in (("--queue-size", self.queue_size, 1), ("--job-timeout", self.job_timeout, 0.001),
                                 ("--max-pixels", self.max_pixels, 64), ("--max-body-mb", self.max_body_mb, 0.001)):
            if not value >= low:
                raise InvalidRequestError(f"{name} must be at least {low:g}, got {value:g}")
        self.executor.check()
        for user, password in self.auth:
            if not user or not password or ":" in user:
                raise InvalidRequestError("each credential must be USER:PASS with a non-empty user (no ':') and password")
        for option, folder in (("--embeddings-dir", self.embeddings_dir), ("--lora-dir", self.lora_dir)):
            if folder is not None and not folder.is_dir():
                raise InvalidRequestError(f"{option}: folder not found: {folder}")
        if self.styles_file is not None and not self.styles_file.is_file():
            raise InvalidRequestError(f"--styles-file: file not found: {self.styles_file}")
        return self


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it could resolve anywhere


def parse_credentials(text: str, source: str) -> tuple[tuple[str, str], ...]:
    """``user:pass`` pairs separated by commas or newlines (A1111's ``--api-auth`` format)."""
    pairs = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise InvalidRequestError(f"{source}: each credential must be USER:PASS")  # never echo the secret
        pairs.append((user, password))
    if not pairs:
        raise InvalidRequestError(f"{source}: no USER:PASS credential found")
    return tuple(pairs)
