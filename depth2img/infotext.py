"""AUTOMATIC1111-compatible generation parameters text ("infotext"), reference section 9.

Format: line 1 the prompt (may span lines), then ``Negative prompt: ...`` when non-empty, then one
line of ``Key: value`` pairs joined by ", ". PNGs carry it in the ``parameters`` text chunk,
JPEG/WebP in the EXIF UserComment.
"""

from __future__ import annotations

import json
import re
from PIL import Image

from .a1111 import INFOTEXT_KEY_PATTERN
from .request import ImageInput

_NEGATIVE = "Negative prompt:"
_KEY = INFOTEXT_KEY_PATTERN
# A1111's re_param_code: a key, then a JSON-quoted value or anything up to the next comma.
_PAIR = re.compile(rf'\s*({_KEY}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_PARAM_LINE = re.compile(rf'(?:\s*{_KEY}:\s*(?:"(?:\\.|[^\\"])+"|[^,]*)(?:,|$))+')
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286


def quote(value: str) -> str:
    """JSON-quote a value the parameter line could not hold verbatim (A1111 ``infotext_utils.quote``).

    A1111 quotes values containing ``,``, ``:`` or a newline. We also quote the empty string and
    values with surrounding spaces or quotes, which A1111 would read back altered; its parser still
    reads all of these.
    """
    if value == "" or value != value.strip() or value.startswith('"') or value.endswith('"') \
            or any(c in value for c in ",:\n\r"):
        return json.dumps(value, ensure_ascii=False)
    return value


def unquote(value: str) -> str:
    """Inverse of :func:`quote`; a value that is not valid JSON is returned as written."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            result = json.loads(value)
        except json.JSONDecodeError:
            return value
        return result if isinstance(result, str) else value
    return value


def build_infotext(prompt: str, negative_prompt: str, params: dict[str, object]) -> str:
    """Build A1111's text: prompt, optional negative line, then ``Key: value`` pairs in the caller's order.

    None values are skipped; other values are written as ``str(value)``. Keys must match A1111's key
    pattern (letters, digits, ``_``, `` ``, ``-``, ``/``) and not be "Prompt" or "Negative prompt".
    """
    pairs = []
    for key, value in params.items():
        if key in ("Prompt", "Negative prompt") or not re.fullmatch(_KEY, key) or key != key.strip():
            raise ValueError(f"infotext key {key!r} is reserved or not a valid A1111 key")
        if value is not None:
            pairs.append(f"{key}: {quote(str(value))}")
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    if pairs:
        lines.append(", ".join(pairs))
    return "\n".join(lines).strip()


def parse_infotext(text: str) -> dict[str, str]:
    """Parse infotext into ``{"Prompt", "Negative prompt", <every key of the parameter line>}``.

    Like A1111's ``parse_generation_parameters`` without its extras (no Size-1/Size-2 split, no
    defaults added). The last line is taken as the parameter line when it consists only of
    ``Key: value`` pairs and is not the only line (a single line needs three pairs, A1111's rule);
    otherwise the text has no parameter line. Ambiguity of the format itself: a prompt whose last line
    looks like ``Key: value`` pairs, written without parameters, is read as parameters.
    """
    *lines, last = text.strip().replace("\r\n", "\n").split("\n")
    is_params = bool(_PARAM_LINE.fullmatch(last)) and not last.lstrip().startswith(_NEGATIVE) \
        and (bool(lines) or len(_PAIR.findall(last)) >= 3)
    if not is_params:
        lines.append(last)
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        if not negative and line.startswith(_NEGATIVE):
            negative.append(line[len(_NEGATIVE):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    result = {"Prompt": "\n".join(prompt).strip(), "Negative prompt": "\n".join(negative).strip()}
    if is_params:
        for key, value in _PAIR.findall(last):
            result[key] = unquote(value.strip())
    return result


def read_infotext(src: ImageInput) -> str | None:
    """The infotext stored in an image, or None.

    Looks, like A1111's ``read_info_from_image``, at the PNG ``parameters`` text chunk, then the EXIF
    UserComment (JPEG/WebP), then a GIF/JPEG comment. Files are decoded with
    :func:`depth2img.images.open_image`, so every safety check applies.
    """
    from .images import open_image  # late import: keeps this module light for parse/build users

    img = src if isinstance(src, Image.Image) else open_image(src)
    text = img.info.get("parameters")
    if isinstance(text, str):
        return text
    comment = img.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, (bytes, str)) and (decoded := _decode_user_comment(comment)):
        return decoded
    gif_comment = img.info.get("comment")
    if isinstance(gif_comment, bytes) and gif_comment:
        return gif_comment.decode("utf-8", errors="replace")
    return None


def _decode_user_comment(raw: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix then the text (piexif.helper.UserComment.load).

    A1111 writes ``UNICODE\\0`` + UTF-16 big-endian (piexif); some tools write little-endian, so the
    byte order is taken from a BOM, else guessed from which bytes of the pairs are zero.
    """
    if isinstance(raw, str):  # Pillow hands back str when the tag was stored as ASCII
        return raw.strip("\0") or None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16")
        else:
            little = body[1::2].count(0) > body[0::2].count(0)
            text = body.decode("utf-16-le" if little else "utf-16-be", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", errors="replace")
    else:
        return None  # JIS or unknown charset
    return text.strip("\0") or None
