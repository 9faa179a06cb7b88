"""The batch runner: one request applied to every file of a folder (or glob), resumable.

- Output names follow input names: ``photo.jpg`` → ``OUTPUT/photo.png`` (``photo-0.png``… for a
  batch size above 1); two inputs with one stem are refused before anything runs.
- ``manifest.jsonl`` in the output folder gets one record per finished item: the input's sha256 (and
  its depth/mask partners'), the request settings, the seed, the status and the error (manifest.py).
- ``resume``: an item is skipped when its outputs exist and its latest record is ``ok`` with the same
  settings, input hashes and seed; everything else is redone.
- Seeds are keyed by the item, not by the run: item ``name`` gets ``(N + k) mod 2**32`` with
  ``k = int(sha256(name)[:8], 16) mod 2**20`` (``name`` = the file name relative to the input
  folder). So an item keeps its seed whatever the listing order, whichever items were done before a
  resume, and when files are added or removed. ``same_seed``: every item gets N. A random base seed
  (-1) is drawn once and, on resume, taken back from the manifest.
- The model loads once, lazily, at the first item that needs work (a fully done resume loads nothing).
- A bad input (zero-byte, corrupt, not an image, missing depth/mask partner) is recorded as failed with
  its reason and the batch goes on; the summary counts ok / failed / skipped.
"""

from __future__ import annotations

import glob
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Depth2ImgError, InvalidRequestError
from ..executors.base import Executor, WorkItem
from ..request import MAX_SEED, GenerationRequest, resolve_seeds
from .manifest import MANIFEST_NAME, append_record, file_hash, read_manifest, settings_hash

FILE_FIELDS = ("image", "mask", "depth_map")  # per-item inputs: recorded by hash, not in the settings
SEED_SPREAD = 2**20


def list_inputs(spec: str | Path, *, exclude: Path | None = None) -> list[Path]:
    """The files of folder ``spec`` (not recursive, hidden files skipped), or of a glob pattern, sorted
    by name. ``exclude`` (the output folder) is left out so a run never eats its own outputs."""
    spec_path = Path(spec)
    if spec_path.is_dir():
        paths = [p for p in spec_path.iterdir() if p.is_file() and not p.name.startswith(".")]
    else:
        paths = [Path(p) for p in glob.glob(str(spec)) if Path(p).is_file()]
        if not paths and not glob.has_magic(str(spec)):
            raise InvalidRequestError(f"--input '{spec}' is neither a folder nor a pattern that matches files")
    if exclude is not None:
        out = exclude.resolve()
        paths = [p for p in paths if out not in p.resolve().parents and p.name != MANIFEST_NAME]
    if not paths:
        raise InvalidRequestError(f"--input '{spec}' matches no files")
    return sorted(paths, key=lambda p: p.name)


def item_seed(base: int, name: str, same_seed: bool = False) -> int:
    """The seed of item ``name`` (see the module docstring): keyed by the name, not the position."""
    if same_seed:
        return base
    k = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % SEED_SPREAD
    return (base + k) % (MAX_SEED + 1)


def find_partner(folder: Path, item: Path, what: str) -> Path:
    """The file in ``folder`` with ``item``'s stem (any extension); a clear error if none or several."""
    matches = sorted(p for p in folder.glob(glob.escape(item.stem) + ".*") if p.is_file() and not p.name.startswith("."))
    if not matches:
        raise InvalidRequestError(f"no {what} for '{item.name}' in '{folder}' (expected a file named '{item.stem}.*')")
    if len(matches) > 1:
        raise InvalidRequestError(f"several {what}s for '{item.name}' in '{folder}': {', '.join(p.name for p in matches)}")
    return matches[0]


def output_paths(out_dir: Path, item: Path, batch_size: int, suffix: str) -> list[Path]:
    from ..outputs import batch_paths

    return batch_paths(out_dir / (item.stem + suffix), batch_size)


@dataclass
class BatchSummary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (item name, reason)
    warnings: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early (the error budget), else None

    @property
    def line(self) -> str:
        line = f"batch: {self.ok} succeeded, {self.failed} failed, {self.skipped} skipped"
        return f"{line}; {self.stopped}" if self.stopped else line


def request_settings(request: GenerationRequest, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able settings an output depends on (file inputs and seed are recorded separately)."""
    import dataclasses

    settings = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name not in FILE_FIELDS + ("seed",)}
    settings["depth_clip"] = list(settings["depth_clip"])
    return {**settings, **extra}


def run_batch(
    load_pipe: Callable[[], Any],
    request: GenerationRequest,
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    depth_dir: Path | None = None,
    mask_dir: Path | None = None,
    resume: bool = False,
    same_seed: bool = False,
    suffix: str = ".png",
    settings: dict[str, Any] | None = None,
    on_item: Callable[[str, str], None] | None = None,
    executor: Executor | None = None,
    max_failures: int | None = None,
) -> BatchSummary:
    """Run ``request`` on every input (see the module docstring). ``request`` carries everything but the
    per-item image (and, with ``depth_dir``/``mask_dir``, the depth map/mask); ``settings`` adds what else
    decides the pixels (model, device, dtype). ``on_item(name, status)`` reports each item as it ends.

    This process plans the items (names, seeds, hashes, resume) and writes the manifest as results
    come back; ``executor`` (default: in this process with ``load_pipe``) makes the pictures, so the
    manifest is the same whichever executor ran. ``max_failures``: stop once more items failed."""
    from ..executors.local import LocalExecutor

    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_NAME
    records = read_manifest(manifest_path) if resume else {}
    base = request.seed
    if base is None or base == -1:
        previous = [r.get("base_seed") for r in records.values() if isinstance(r.get("base_seed"), int)]
        base = previous[-1] if previous else resolve_seeds(None, 1)[0]
    common = request_settings(request, {**(settings or {}), "same_seed": same_seed, "suffix": suffix})
    fingerprint = settings_hash(common)
    summary = BatchSummary()
    pending: dict[str, dict[str, Any]] = {}  # item name -> its manifest record, until its result is back

    def finish(name: str, status: str, error: str | None) -> None:
        record = pending.pop(name)
        record.update(status=status, error=error, time=time.time())
        append_record(manifest_path, record)
        if status == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            summary.failures.append((name, error or "failed"))
        _report(on_item, name, status)
        if max_failures is not None and summary.failed > max_failures:
            raise _OverBudget

    def plan() -> Iterator[WorkItem]:
        """The work items, in input order; skipped and unplannable items are recorded on the way."""
        for path in inputs:
            name = path.name
            seed = item_seed(base, name, same_seed)
            outputs = output_paths(out_dir, path, request.batch_size, suffix)
            record: dict[str, Any] = {"item": name, "input": str(path), "seed": seed, "base_seed": base,
                                      "settings_hash": fingerprint, "settings": common,
                                      "outputs": [str(p) for p in outputs]}
            pending[name] = record
            try:
                record["input_sha256"] = file_hash(path)
                partners: dict[str, Any] = {}
                for folder, field_name, what in ((depth_dir, "depth_map", "depth map"), (mask_dir, "mask", "mask")):
                    if folder is not None:
                        partner = find_partner(Path(folder), path, what)
                        record[f"{field_name}_sha256"] = file_hash(partner)
                        partners[field_name] = str(partner)
            except (Depth2ImgError, OSError) as error:
                finish(name, "failed", str(error) or type(error).__name__)
                continue
            previous = records.get(name)
            if previous is not None and _same(previous, record) and all(p.exists() for p in outputs):
                pending.pop(name)
                summary.skipped += 1
                _report(on_item, name, "skipped")
                continue
            yield WorkItem(name, path, request.replace(**partners), seed, tuple(outputs))

    runner = executor if executor is not None else LocalExecutor(load_pipe)
    results = runner.run(plan())
    try:
        for result in results:
            if result.name not in pending:
                continue  # a second result for one item (a retried task that had finished): recorded once
            summary.warnings.extend(result.warnings)
            finish(result.name, result.status, result.error)
    except _OverBudget:
        summary.stopped = f"stopped after {summary.failed} failures (--max-failures {max_failures})"
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return summary


class _OverBudget(Exception):
    """More items failed than ``max_failures`` allows: the run stops (unfinished items stay unrecorded)."""


_MATCH_KEYS = ("status", "settings_hash", "seed", "input_sha256", "depth_map_sha256", "mask_sha256", "outputs")


def _same(previous: dict[str, Any], current: dict[str, Any]) -> bool:
    """A finished record matches the current settings: ok, same settings, seed, input and partner hashes."""
    if previous.get("status") != "ok":
        return False
    return all(previous.get(key) == current.get(key) for key in _MATCH_KEYS if key != "status")


def _report(on_item: Callable[[str, str], None] | None, name: str, status: str) -> None:
    if on_item is not None:
        on_item(name, status)
