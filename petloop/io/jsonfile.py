"""Reading a JSON file that came with the data (case.json, dataset.json, a manifest).

One function, :func:`read_json`, so that every such file is refused the same way when it is
missing, a folder, too large, not UTF-8, malformed or nested without end: one error (of the
caller's type) naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_JSON_BYTES = 64 * 2**20
_NO_DEFAULT = object()


def read_json(path: str | Path, error: type[Exception] = ValueError, *,
              what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES,
              if_empty=_NO_DEFAULT):
    """The parsed content of ``path``; ``error(message)`` for anything wrong with it.
    ``if_empty``: what an empty (or blank) file stands for, where it is allowed."""
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"{path}: a folder, not a {what}")
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {size:,} bytes, too large for a {what} (at most "
                        f"{max_bytes:,})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if if_empty is not _NO_DEFAULT and not text.strip():
        return if_empty
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to be a {what}") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise error(f"{path}: not valid JSON ({exc})") from None
