"""A command's outputs: checked before any work runs, then written as one set.

Checks (:meth:`OutputSet.add`, :meth:`OutputSet.add_folder`), each failing with one
:class:`OutputError` that names the option and the file:

* the file name has a suffix that fits what is written (a volume: ``.nii.gz``, ``.nii`` or
  ``.mha``; ``.json``; ``.csv``; ``.png`` ...);
* it is not an existing folder, and its folder exists or can be made, and can be written in;
* it is not the same file as any input (resolved paths, and ``os.path.samefile`` for existing
  files: symlinks and hard links count) nor as another output of the same run.

Writing (:meth:`OutputSet.writing`): every writer writes to a hidden temporary file beside its
target; only when every output of the run is written are they renamed into place, with SIGINT
and SIGTERM held back for those few renames. On any error, ``KeyboardInterrupt`` or
``SystemExit`` the temporaries (and the folders made for them) are removed and no target is
touched: a run leaves all of its outputs or none.

:func:`safe_name` checks a name taken from data or an option before it becomes a file name, so
nothing is written outside the folder given. :func:`staged_folder` writes a whole folder under a
hidden temporary name and renames it into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from petloop.io.atomic import _FILE_MODE

_FOLDER_MODE = _FILE_MODE | ((_FILE_MODE & 0o444) >> 2)  # rw -> rwx where readable

KINDS: dict[str, tuple[str, ...]] = {
    "volume": (".nii.gz", ".nii", ".mha"),
    "json": (".json",),
    "csv": (".csv",),
    "png": (".png",),
    "markdown": (".md",),
    "weights": (".pt",),
    "dicom": (".dcm",),
}
FOLDER = "folder"

PathLike = str | os.PathLike


class OutputError(ValueError):
    """An output that must not be written; the message names the option and the file."""


# names -----------------------------------------------------------------------------------------
def safe_name(name: str, what: str) -> str:
    """``name`` when it is a plain file name, else :class:`OutputError` naming ``what``.

    A plain name is not empty, not ``.`` or ``..``, holds no path separator and no NUL, and does
    not start with a dot (petloop's temporary files do; a name from data must not hide among
    them). Use it wherever a name from data or an option becomes (part of) a file name.
    """
    if not isinstance(name, str):
        raise OutputError(f"{what}: {name!r} is not a name")
    problem = None
    if not name.strip():
        problem = "an empty name"
    elif "\0" in name:
        problem = "a name with a NUL character"
    elif name in (".", ".."):
        problem = "not a file name"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        problem = "a path, not a file name: it must not hold '/' or '\\'"
    elif os.path.isabs(name):
        problem = "an absolute path, not a file name"
    elif name.startswith("."):
        problem = "a hidden name: it must not start with '.'"
    elif any(ord(c) < 32 for c in name):
        problem = "a name with a control character"
    if problem:
        raise OutputError(f"{what}: {name!r} is {problem}")
    return name


# checks ----------------------------------------------------------------------------------------
def _absolute(path: PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file (or folder): resolved, or linked."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _first_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _check_writable_folder(option: str, path: Path, folder: Path) -> None:
    """``folder`` (to hold ``path``) exists as a writable folder or can be made."""
    base = _first_existing(folder)
    if base.is_symlink() and not base.exists():
        raise OutputError(f"{option} {path}: {base} is a broken symbolic link")
    if not base.is_dir():
        raise OutputError(f"{option} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write in {base} (permission denied)")


def check_suffix(option: str, path: PathLike, kind: str) -> None:
    suffixes = KINDS[kind]
    name = Path(path).name
    if not any(name.endswith(s) and len(name) > len(s) for s in suffixes):
        raise OutputError(f"{option} {path}: a {kind} file name must end in "
                          f"{' or '.join(suffixes)}")


def _suffix(path: Path, kind: str) -> str:
    for s in KINDS.get(kind, ()):
        if path.name.endswith(s):
            return s
    return path.suffix or ".tmp"


@dataclass(frozen=True)
class Output:
    option: str
    path: Path
    kind: str


def _flatten(inputs: Mapping[str, PathLike | Iterable[PathLike] | None]) -> list[tuple[str, Path]]:
    out = []
    for option, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        out += [(option, Path(v)) for v in values if v is not None]
    return out


class OutputSet:
    """The outputs of one run: checked as they are added, written together by :meth:`writing`.

    ``inputs`` maps an option (``--pet``) to the file(s) it names; no output may be one of them.
    """

    def __init__(self, inputs: Mapping[str, PathLike | Iterable[PathLike] | None] | None = None):
        self.inputs: list[tuple[str, Path]] = _flatten(inputs or {})
        self.outputs: list[Output] = []
        self.folders: list[Output] = []

    def add_input(self, option: str, path: PathLike | None) -> None:
        if path is not None:
            self.inputs.append((option, Path(path)))

    def _not_an_input(self, option: str, path: Path, role: str = "") -> None:
        for in_option, in_path in self.inputs:
            if same_file(path, in_path):
                raise OutputError(f"{option} {path}: {role}the same file as the input "
                                  f"{in_option} {in_path}; write it elsewhere")

    def add(self, option: str, path: PathLike, kind: str) -> Path:
        """Check one output file of ``kind`` (see :data:`KINDS`) and add it to the set."""
        path = Path(path)
        if kind not in KINDS:
            raise ValueError(f"unknown output kind {kind!r}; use one of {sorted(KINDS)}")
        self._not_an_input(option, path)
        check_suffix(option, path, kind)
        if path.is_dir():
            raise OutputError(f"{option} {path}: an existing folder, not a file name")
        if os.path.lexists(path) and not path.exists():
            raise OutputError(f"{option} {path}: a broken symbolic link")
        _check_writable_folder(option, path, _absolute(path).parent)
        for other in self.outputs:
            if same_file(path, other.path):
                raise OutputError(f"{option} {path}: the same file as the output "
                                  f"{other.option}; give each output its own name")
        self.outputs.append(Output(option, path, kind))
        return path

    def add_folder(self, option: str, path: PathLike) -> Path:
        """Check an output folder (files in it are added with :meth:`add`)."""
        path = Path(path)
        self._not_an_input(option, path)
        if os.path.lexists(path) and not path.is_dir():
            raise OutputError(f"{option} {path}: a file, not a folder")
        _check_writable_folder(option, path, _absolute(path))
        self.folders.append(Output(option, path, FOLDER))
        return path

    def in_folder(self, option: str, folder: PathLike, name: str, kind: str,
                  what: str | None = None) -> Path:
        """Add ``folder / name`` as an output, ``name`` checked by :func:`safe_name`."""
        safe_name(name, what or option)
        return self.add(option, Path(folder) / name, kind)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Staged]:
        """Stage every output (see :class:`Staged`); commit them all when the block ends."""
        staged = Staged(self)
        try:
            yield staged
            staged.commit()
        except BaseException:
            staged.discard()
            raise


class Staged:
    """Temporary files beside the targets of an :class:`OutputSet`, renamed in by ``commit``."""

    def __init__(self, outputs: OutputSet):
        self._targets = {_absolute(o.path): o for o in outputs.outputs}
        self._temps: dict[Path, Path] = {}
        self._made: list[Path] = []
        self._done = False

    def _mkdirs(self, folder: Path) -> None:
        missing = []
        p = folder
        while not os.path.lexists(p) and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._made.append(d)

    def path(self, target: PathLike) -> Path:
        """The temporary file to write ``target``'s content to (hidden, beside ``target``,
        with the same suffix, so writers that go by the suffix write the right format)."""
        key = _absolute(target)
        if key not in self._targets:
            raise ValueError(f"{target} is not an output of this run")
        if key in self._temps:
            return self._temps[key]
        self._mkdirs(key.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{key.name}.", suffix=f".part"
                                   f"{_suffix(key, self._targets[key].kind)}", dir=key.parent)
        os.close(fd)
        self._temps[key] = Path(tmp)
        return Path(tmp)

    # writers -----------------------------------------------------------------------------------
    def call(self, target: PathLike, writer: Callable[[Path], object]) -> Path:
        writer(self.path(target))
        return Path(target)

    def text(self, target: PathLike, text: str) -> Path:
        return self.call(target, lambda p: p.write_text(text, encoding="utf-8"))

    def json(self, target: PathLike, obj: object, indent: int | None = 2) -> Path:
        return self.text(target, json.dumps(obj, indent=indent) + "\n")

    def volume(self, target: PathLike, volume, compress: bool = True) -> Path:
        from petloop.io.volume import write_volume

        return self.call(target, lambda p: write_volume(volume, p, compress=compress))

    def dicom(self, target: PathLike, dataset) -> Path:
        """A pydicom dataset (a DICOM SEG or SR, say) as a DICOM file."""
        return self.call(target, lambda p: dataset.save_as(p, enforce_file_format=True))

    def clicks(self, target: PathLike, clicks, form: str = "simple", *,
               indent: int | None = None) -> Path:
        from petloop.io.clicks import write_clicks

        return self.call(target, lambda p: write_clicks(clicks, p, form=form, indent=indent))

    def figure(self, target: PathLike, fig, dpi: int = 90) -> Path:
        from petloop.io.atomic import write_figure

        return self.call(target, lambda p: write_figure(fig, p, dpi=dpi))

    # the end -----------------------------------------------------------------------------------
    def commit(self) -> None:
        missing = [o.option for k, o in self._targets.items() if k not in self._temps]
        if missing:
            raise RuntimeError(f"outputs not written: {', '.join(missing)}")
        with held_signals():
            for tmp in self._temps.values():
                os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; give the usual permissions
            for key, tmp in self._temps.items():
                os.replace(tmp, key)
            self._done = True

    def discard(self) -> None:
        if self._done:
            return
        for tmp in self._temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        for d in reversed(self._made):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty


# signals and folders ---------------------------------------------------------------------------
@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (in the main thread) until the block is done: a few
    renames that must happen all together."""
    if (threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "pthread_sigmask")):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def replace_folder(source: PathLike, target: PathLike) -> Path:
    """Rename the folder ``source`` onto ``target``; an existing ``target`` folder goes."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    with held_signals():
        if os.path.lexists(target):
            if not target.is_dir() or target.is_symlink():
                raise OutputError(f"{target}: exists and is not a folder")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                        dir=target.parent))
            os.replace(target, old / target.name)
        try:
            os.replace(source, target)
        except BaseException:
            if old is not None:
                os.replace(old / target.name, target)
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged_folder(target: PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``target``; rename it onto ``target`` when the
    block ends, remove it on any error or interrupt."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        os.chmod(tmp, _FOLDER_MODE)  # mkdtemp makes 0700; give the usual permissions
        yield tmp
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
