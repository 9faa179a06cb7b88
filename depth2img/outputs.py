"""Every file depth2img writes goes through here: one atomic writer, output naming, target checks.

- :func:`atomic_output` is the only atomic writer (images, depth maps, converted checkpoints, the
  checkpoint cache and its index): a unique temporary name beside the target (``O_EXCL``, so threads
  and processes never share one), fsync, ``os.replace``, fsync of the folder. Readers never see a
  half-written file; concurrent writers to one target leave one complete file and no temporaries.
- :func:`save_image` writes the format the extension names (PNG with A1111's ``parameters`` text
  chunk; JPEG/WebP with the infotext in the EXIF UserComment, as A1111 does) and refuses others.
- :func:`check_targets` validates every output of a command *before* any model loads: not empty, not a
  folder, no parent that is a file, writable, a known suffix, no two outputs on one path (batch names
  ``OUT-0.png``… included). The CLI, the server and batch jobs share it.
- :func:`save_or_fall_back`: a write that fails after a generation never loses the picture: it is
  written beside the target (or in the current folder / temp folder) and the caller says where.

The standard library has no atomic write with unique temp names and a durable rename (``tempfile``
creates 0600 files, which would make outputs unreadable to the group); this module fills that gap.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

from .errors import OutputError

# Pillow format per image suffix we write. One table: the CLI's checks and save_image read it.
IMAGE_FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
DEPTH_SUFFIXES: tuple[str, ...] = (".png", ".npy")  # --save-depth: 16-bit PNG or the exact float map
JPEG_QUALITY = 95  # A1111's default jpeg_quality (opts.jpeg_quality)
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and ``os.replace`` it over ``path``.

    On any error the temporary file is removed and an existing ``path`` is left untouched. The temp
    name keeps the destination's suffix (``.x.<random>.tmp.png``) so writers that infer the format
    from the name (``Image.save``, ``np.save``, safetensors) behave. The parent directory is created.
    Files get the user's umask (0644 usually), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    mode = os.stat(tmp).st_mode & 0o777  # 0o666 minus the umask
    try:
        yield tmp
        if os.stat(tmp).st_mode & 0o777 != mode:  # writers that replace the file (safetensors: 0600)
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; directories cannot be opened this way on Windows.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); return the path."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def image_format(path: str | Path) -> str:
    """Pillow's format name for an output path, from its extension; :class:`OutputError` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        known = ", ".join(IMAGE_FORMATS)
        raise OutputError(f"'{path}': unknown image extension {suffix or '(none)'!r}; use one of {known}")
    return IMAGE_FORMATS[suffix]


def user_comment(text: str) -> bytes:
    """EXIF UserComment as A1111 writes it (piexif.helper.UserComment.dump, encoding "unicode"):
    the 8-byte ``UNICODE\\0`` prefix, then UTF-16 big-endian text."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def save_image(
    img: Image.Image,
    path: str | Path,
    *,
    infotext: str | None = None,
    extra_text: Mapping[str, str] | None = None,
) -> Path:
    """Save atomically in the format the extension names, with the infotext where A1111 puts it.

    PNG: ``parameters`` text chunk (Pillow writes tEXt for latin-1, iTXt otherwise, as A1111) plus
    ``extra_text`` chunks. JPEG/WebP: the infotext in the EXIF UserComment; an image with alpha or
    16-bit/float data is converted to RGB first (JPEG cannot hold it).
    """
    fmt = image_format(path)
    options: dict[str, object] = {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in (extra_text or {}).items():
            info.add_text(key, value)
        if infotext is not None:
            info.add_text("parameters", infotext)
        options["pnginfo"] = info
    else:
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        options["quality"] = JPEG_QUALITY
        if infotext is not None:
            exif = Image.Exif()
            exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = user_comment(infotext)
            options["exif"] = exif.tobytes()
    with atomic_output(path) as tmp:
        img.save(tmp, format=fmt, **options)
    return Path(path)


def batch_paths(out: Path, count: int) -> list[Path]:
    """``OUT.png`` for one image; ``OUT-0.png, OUT-1.png, ...`` for a batch (the CLI's naming)."""
    out = Path(out)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]


@dataclass(frozen=True)
class Target:
    """One output of a command: the option that names it, the path(s) it will write, the suffixes it takes.

    ``folder=True`` for outputs that are folders (``convert`` to diffusers); ``suffixes=()`` accepts any.
    """

    option: str
    paths: tuple[Path, ...]
    suffixes: tuple[str, ...] = tuple(IMAGE_FORMATS)
    folder: bool = False


def check_targets(targets: Iterable[Target]) -> None:
    """Refuse, with one line naming the option, any output that could not be written or would collide.

    Runs before any model loads, so a typo in ``--out`` costs milliseconds, not a generation.
    """
    seen: dict[Path, str] = {}
    for target in targets:
        for path in target.paths:
            _check_one(target, path)
            key = Path(os.path.abspath(path))
            if key in seen:
                other = seen[key]
                same = "the same path" if other == target.option else f"the same path as {other}"
                raise OutputError(f"{target.option} '{path}' is {same}: the outputs would overwrite each other")
            seen[key] = target.option


def _check_one(target: Target, path: Path) -> None:
    option = target.option
    text = str(path)
    if text.strip() == "" or text == ".":
        raise OutputError(f"{option} is empty: give a file name")
    if not target.folder:
        if text.endswith(("/", os.sep)) or path.is_dir():
            raise OutputError(f"{option} '{path}' is a folder: give a file name such as {path / 'out.png'}")
        if target.suffixes and path.suffix.lower() not in target.suffixes:
            raise OutputError(
                f"{option} '{path}': unknown extension {path.suffix or '(none)'!r}; use one of {', '.join(target.suffixes)}"
            )
    elif path.exists() and not path.is_dir():
        raise OutputError(f"{option} '{path}' is a file, but this output is a folder")
    parent = Path(os.path.abspath(path)).parent
    existing = parent
    while not existing.exists():  # the nearest ancestor that exists decides
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} '{path}': '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} '{path}': no permission to write in '{existing}'")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        raise OutputError(f"{option} '{path}' exists and cannot be replaced (no permission)")


def save_or_fall_back(write: Callable[[Path], object], path: Path) -> tuple[Path, str | None]:
    """Run ``write(path)``; if it fails with an OS error, write to a fallback file and say so.

    The fallback is ``<stem>.<random>.<suffix>`` beside the target, else in the current folder, else
    in the temp folder: a generated picture is never lost to a full disk or a vanished folder.
    Returns ``(written_path, warning or None)``.
    """
    try:
        write(path)
        return path, None
    except OSError as error:
        reason = error.strerror or str(error)
    name = f"{path.stem}.{secrets.token_hex(3)}{path.suffix}"
    for folder in (path.parent, Path.cwd(), Path(tempfile.gettempdir())):
        candidate = folder / name
        try:
            write(candidate)
        except OSError:
            continue
        return candidate, f"could not write {path} ({reason}); wrote {candidate} instead"
    raise OutputError(f"could not write {path} ({reason}), nor a fallback copy beside it, here or in the temp folder")
