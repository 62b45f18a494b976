"""Dataset layouts: find cases on disk, load them, and write them.

Three layouts are read (and written) by petloop:

``autopet``
    autoPET NIfTI study folders ``<root>/<patient>/<study>/`` holding ``CTres.nii.gz`` (or
    ``CT.nii.gz``, resampled onto the PET grid on load), ``SUV.nii.gz`` and optionally
    ``SEG.nii.gz`` (lesions), ``ORGANS.nii.gz`` (organ labels), ``clicks.json`` and
    ``case.json`` (metadata such as the tracer). The case id is ``<patient>_<study>``.
``nnunet``
    an nnU-Net raw dataset: ``dataset.json``, ``imagesTr/<case>_0000`` (CT), ``_0001`` (PET/SUV),
    optionally ``_0002``/``_0003`` (FG/BG click heatmaps), ``labelsTr/<case>``; petloop adds
    ``organsTr/<case>``, ``clicksTr/<case>_clicks.json`` and ``casesTr/<case>.json`` (``Ts`` for
    the test split). Channel indices are taken from ``channel_names`` in ``dataset.json``.
``gc``
    a grand-challenge input folder ``images/ct/<uuid>.mha``, ``images/pet/<uuid>.mha`` and
    ``lesion-clicks.json``; the case id is the CT file stem. A folder whose sub-folders are
    such input folders holds several cases; petloop also keeps ``labels/``, ``organs/`` and
    ``case.json`` there for evaluation.
``dicom``
    DICOM study folders ``<root>/<case>/`` with a ``CT/`` and a ``PET/`` folder of DICOM files
    (one series each; petloop reads the PET into SUV from its header, :mod:`petloop.io.dicom`)
    and, as for ``autopet``, optionally ``SEG.nii.gz``, ``ORGANS.nii.gz`` (on the PET grid),
    ``clicks.json`` and ``case.json``. ``petloop phantom --layout dicom`` writes it;
    ``petloop convert`` turns a study from the scanner into an ``autopet`` case.

The tracer of a case comes from its ``case.json`` when present, else from its name
(``fdg_...``, ``PETCT_...`` are FDG, ``psma_...`` is PSMA, as in the public data).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from petloop.io.atomic import write_json_atomic
from petloop.io.checks import check_label
from petloop.io.clicks import Clicks, read_clicks, write_clicks
from petloop.io.jsonfile import read_json
from petloop.io.volume import (
    DEFAULT_LIMITS,
    ReadLimits,
    Volume,
    VolumeError,
    read_volume,
    resample_to,
    volume_stem,
    write_volume,
)

LAYOUTS = ("autopet", "nnunet", "gc", "dicom")
DICOM_FOLDERS = {"ct": "CT", "pet": "PET"}
TRACERS = ("fdg", "psma")
CASE_JSON = "case.json"


class LayoutError(ValueError):
    """A folder is not a dataset petloop can read, or a case in it is incomplete."""


def tracer_from_name(name: str) -> str | None:
    low = name.lower()
    if low.startswith("psma"):
        return "psma"
    if low.startswith(("fdg", "petct_")):
        return "fdg"
    return None


@dataclass(frozen=True, eq=False)
class Case:
    """One loaded case: CT on the PET grid, PET in SUV and whatever else the dataset holds."""

    case_id: str
    ct: Volume
    pet: Volume
    label: Volume | None = None
    organs: Volume | None = None
    clicks: Clicks | None = None
    tracer: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's files are; :meth:`load` reads and checks them."""

    case_id: str
    layout: str
    ct: Path
    pet: Path
    label: Path | None = None
    organs: Path | None = None
    clicks: Path | None = None
    meta: Path | None = None
    heatmaps: tuple[Path, Path] | None = None

    def read_meta(self) -> dict:
        if self.meta is None or not self.meta.is_file():
            return {}
        meta = read_json(self.meta, LayoutError, what="case description")
        if not isinstance(meta, dict):
            raise LayoutError(f"{self.meta}: a case description is a JSON object")
        return meta

    @property
    def tracer(self) -> str | None:
        tracer = self.read_meta().get("tracer")
        return tracer.lower() if isinstance(tracer, str) else tracer_from_name(self.case_id)

    def load(self, with_label: bool = True, *, limits: ReadLimits = DEFAULT_LIMITS) -> Case:
        """Read and check the case's files (images up to ``limits``)."""
        if self.layout == "dicom":
            from petloop.io.dicom import read_image

            pet = read_image(self.pet, "PT", limits=limits)
            ct = read_image(self.ct, "CT", limits=limits)
        else:
            pet = read_volume(self.pet, limits=limits)
            ct = read_volume(self.ct, limits=limits)
        ct = resample_to(ct, pet, default_value=-1024.0, moving_name=f"CT {self.ct}",
                         reference_name=f"PET {self.pet}")
        label = organs = None
        if with_label and self.label is not None:
            label = _on_grid(read_volume(self.label, limits=limits), pet, self.label, self.pet)
            check_label(label, str(self.label))
        if with_label and self.organs is not None:
            organs = _on_grid(read_volume(self.organs, limits=limits), pet, self.organs,
                              self.pet)
        clicks = read_clicks(self.clicks, shape=pet.shape) if self.clicks else None
        meta = self.read_meta()
        return Case(self.case_id, ct, pet, label, organs, clicks, self.tracer, meta)


def _on_grid(volume: Volume, pet: Volume, path: Path, pet_path: Path) -> Volume:
    if not volume.same_grid(pet):
        raise VolumeError(
            f"{path}: the label grid {volume.geometry()} differs from the PET grid of {pet_path} "
            f"{pet.geometry()}"
        )
    return volume


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` or a folder between it and ``root`` is hidden: petloop's temporary
    files and folders (a write in progress or interrupted) start with a dot."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


# readers --------------------------------------------------------------------------------------
def _autopet_study(study: Path, case_id: str) -> CaseFiles:
    pet = _existing(study / "SUV.nii.gz")
    if pet is None:
        hint = " (PET.nii.gz is activity, not SUV)" if (study / "PET.nii.gz").exists() else ""
        raise LayoutError(f"{study}: no SUV.nii.gz{hint}")
    ct = _existing(study / "CTres.nii.gz") or _existing(study / "CT.nii.gz")
    if ct is None:
        raise LayoutError(f"{study}: neither CTres.nii.gz nor CT.nii.gz")
    return CaseFiles(
        case_id, "autopet", ct, pet,
        label=_existing(study / "SEG.nii.gz"),
        organs=_existing(study / "ORGANS.nii.gz"),
        clicks=_existing(study / "clicks.json") or _existing(study / f"{case_id}_clicks.json"),
        meta=_existing(study / CASE_JSON),
    )


def read_autopet(root: Path) -> list[CaseFiles]:
    if (root / "SUV.nii.gz").exists() or (root / "PET.nii.gz").exists():
        return [_autopet_study(root, f"{root.parent.name}_{root.name}")]
    studies = sorted({p.parent for p in root.glob("*/*/SUV.nii.gz")}
                     | {p.parent for p in root.glob("*/*/PET.nii.gz")})
    studies = [s for s in studies if not _hidden(s, root)]
    if not studies:
        single = sorted({p.parent for p in root.glob("*/SUV.nii.gz") if not _hidden(p, root)})
        return [_autopet_study(s, f"{root.name}_{s.name}") for s in single]
    return [_autopet_study(s, f"{s.parent.name}_{s.name}") for s in studies]


def _channel_index(channels: dict[str, str], names: tuple[str, ...], default: int) -> int:
    for idx, name in channels.items():
        if str(name).strip().lower() in names:
            return int(idx)
    return default


def read_nnunet(root: Path, split: str = "Tr") -> list[CaseFiles]:
    dataset_json = root / "dataset.json"
    ds = read_json(dataset_json, LayoutError, what="dataset.json")
    if not isinstance(ds, dict):
        raise LayoutError(f"{dataset_json}: dataset.json is a JSON object")
    ending = ds.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii", ".mha"):
        raise LayoutError(f"{dataset_json}: file_ending {str(ending)[:40]!r} is not one of "
                          ".nii.gz, .nii, .mha")
    channels = ds.get("channel_names") or ds.get("modality") or {}
    if not isinstance(channels, dict):
        raise LayoutError(f"{dataset_json}: channel_names is a JSON object")
    ct_idx = _channel_index(channels, ("ct",), 0)
    pet_idx = _channel_index(channels, ("pet", "suv"), 1)
    fg_idx = _channel_index(channels, ("fg",), -1)
    bg_idx = _channel_index(channels, ("bg",), -1)
    images = root / f"images{split}"
    if not images.is_dir():
        raise LayoutError(f"{root}: no images{split} folder")
    suffix = f"_{ct_idx:04d}{ending}"
    cases = []
    for ct in sorted(p for p in images.glob(f"*{suffix}") if not p.name.startswith(".")):
        case_id = ct.name[: -len(suffix)]
        pet = images / f"{case_id}_{pet_idx:04d}{ending}"
        if not pet.is_file():
            raise LayoutError(f"{pet}: missing PET channel of case {case_id}")
        heatmaps = None
        if fg_idx >= 0 and bg_idx >= 0:
            fg = images / f"{case_id}_{fg_idx:04d}{ending}"
            bg = images / f"{case_id}_{bg_idx:04d}{ending}"
            if fg.is_file() and bg.is_file():
                heatmaps = (fg, bg)
        cases.append(CaseFiles(
            case_id, "nnunet", ct, pet,
            label=_existing(root / f"labels{split}" / f"{case_id}{ending}"),
            organs=_existing(root / f"organs{split}" / f"{case_id}{ending}"),
            clicks=_existing(root / f"clicks{split}" / f"{case_id}_clicks.json")
            or _existing(images / f"{case_id}_clicks.json"),
            meta=_existing(root / f"cases{split}" / f"{case_id}.json"),
            heatmaps=heatmaps,
        ))
    return cases


def _single_image(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.name.endswith((".mha", ".nii.gz", ".nii")) and not p.name.startswith("."))



def _gc_case(folder: Path) -> CaseFiles:
    cts = _single_image(folder / "images" / "ct")
    pets = _single_image(folder / "images" / "pet")
    if len(cts) != 1 or len(pets) != 1:
        raise LayoutError(
            f"{folder}: a grand-challenge input holds one CT and one PET image, found "
            f"{len(cts)} in images/ct and {len(pets)} in images/pet"
        )
    case_id = volume_stem(cts[0].name)

    def first(sub: str) -> Path | None:
        d = folder / sub
        files = _single_image(d) if d.is_dir() else []
        return files[0] if files else None

    return CaseFiles(
        case_id, "gc", cts[0], pets[0],
        label=first("labels"), organs=first("organs"),
        clicks=_existing(folder / "lesion-clicks.json"),
        meta=_existing(folder / CASE_JSON),
    )


def read_gc(root: Path) -> list[CaseFiles]:
    if (root / "images" / "ct").is_dir():
        return [_gc_case(root)]
    return [_gc_case(d) for d in sorted(root.iterdir())
            if (d / "images" / "ct").is_dir() and not d.name.startswith(".")]


def _dicom_study(study: Path, case_id: str) -> CaseFiles:
    return CaseFiles(
        case_id, "dicom", study / DICOM_FOLDERS["ct"], study / DICOM_FOLDERS["pet"],
        label=_existing(study / "SEG.nii.gz"), organs=_existing(study / "ORGANS.nii.gz"),
        clicks=_existing(study / "clicks.json"), meta=_existing(study / CASE_JSON))


def _is_dicom_study(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in DICOM_FOLDERS.values())


def read_dicom(root: Path) -> list[CaseFiles]:
    if _is_dicom_study(root):
        return [_dicom_study(root, root.name)]
    return [_dicom_study(d, d.name) for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and _is_dicom_study(d)]


def detect_layout(root: Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder")
    if (root / "dataset.json").is_file():
        return "nnunet"
    if _is_dicom_study(root) or any(_is_dicom_study(d) for d in root.iterdir() if d.is_dir()
                                    and not d.name.startswith(".")):
        return "dicom"
    if (root / "images" / "ct").is_dir() or any(root.glob("*/images/ct")):
        return "gc"
    if (root / "SUV.nii.gz").exists() or any(root.glob("*/*/SUV.nii.gz")) or any(
        root.glob("*/SUV.nii.gz")
    ):
        return "autopet"
    raise LayoutError(
        f"{root}: not a dataset petloop can read (expected autoPET study folders with "
        "SUV.nii.gz, an nnU-Net raw dataset with dataset.json, a grand-challenge "
        "images/ct + images/pet folder, or DICOM study folders with CT/ and PET/)"
    )


def find_cases(root: str | Path, layout: str = "auto", split: str = "Tr") -> list[CaseFiles]:
    """All cases under ``root`` in the given layout (``auto`` detects it)."""
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "autopet":
        cases = read_autopet(root)
    elif layout == "nnunet":
        cases = read_nnunet(root, split)
    elif layout == "gc":
        cases = read_gc(root)
    elif layout == "dicom":
        cases = read_dicom(root)
    else:
        raise LayoutError(f"unknown layout {layout!r}; use one of {LAYOUTS} or 'auto'")
    if not cases:
        raise LayoutError(f"{root}: no cases found in the {layout} layout")
    return cases


def iter_cases(root: str | Path, layout: str = "auto", split: str = "Tr") -> Iterator[Case]:
    for files in find_cases(root, layout, split):
        yield files.load()


# writers --------------------------------------------------------------------------------------
NNUNET_CHANNELS = {"0": "CT", "1": "PET"}
NNUNET_LABELS = {"background": 0, "tumor": 1}


def write_case(case: Case, root: str | Path, layout: str, split: str = "Tr") -> CaseFiles:
    """Write one case into ``root`` in ``layout``; returns where its files went."""
    root = Path(root)
    if layout == "autopet":
        patient, _, study = case.case_id.rpartition("_")
        folder = root / (patient or case.case_id) / (study if patient else "study")
        paths = dict(ct=folder / "CTres.nii.gz", pet=folder / "SUV.nii.gz",
                     label=folder / "SEG.nii.gz", organs=folder / "ORGANS.nii.gz",
                     clicks=folder / "clicks.json", meta=folder / CASE_JSON)
    elif layout == "nnunet":
        e = ".nii.gz"
        paths = dict(ct=root / f"images{split}" / f"{case.case_id}_0000{e}",
                     pet=root / f"images{split}" / f"{case.case_id}_0001{e}",
                     label=root / f"labels{split}" / f"{case.case_id}{e}",
                     organs=root / f"organs{split}" / f"{case.case_id}{e}",
                     clicks=root / f"clicks{split}" / f"{case.case_id}_clicks.json",
                     meta=root / f"cases{split}" / f"{case.case_id}.json")
    elif layout == "gc":
        folder = root / case.case_id
        paths = dict(ct=folder / "images" / "ct" / f"{case.case_id}.mha",
                     pet=folder / "images" / "pet" / f"{case.case_id}.mha",
                     label=folder / "labels" / f"{case.case_id}.mha",
                     organs=folder / "organs" / f"{case.case_id}.mha",
                     clicks=folder / "lesion-clicks.json", meta=folder / CASE_JSON)
    elif layout == "dicom":
        folder = root / case.case_id
        paths = dict(ct=folder / DICOM_FOLDERS["ct"], pet=folder / DICOM_FOLDERS["pet"],
                     label=folder / "SEG.nii.gz", organs=folder / "ORGANS.nii.gz",
                     clicks=folder / "clicks.json", meta=folder / CASE_JSON)
    else:
        raise LayoutError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    if layout == "dicom":
        from petloop.io.dicom import write_study

        write_study(case, paths["ct"], paths["pet"])
    else:
        write_volume(case.ct, paths["ct"])
        write_volume(case.pet, paths["pet"])
    written: dict[str, Path | None] = {"label": None, "organs": None, "clicks": None, "meta": None}
    if case.label is not None:
        written["label"] = write_volume(case.label, paths["label"])
    if case.organs is not None:
        written["organs"] = write_volume(case.organs, paths["organs"])
    if case.clicks is not None:
        form = "gc" if layout == "gc" else "simple"
        written["clicks"] = write_clicks(case.clicks, paths["clicks"], form=form)
    meta = dict(case.meta)
    if case.tracer is not None:
        meta.setdefault("tracer", case.tracer)
    if meta:
        written["meta"] = write_json_atomic(paths["meta"], meta)
    return CaseFiles(case.case_id, layout, paths["ct"], paths["pet"], **written)


def write_nnunet_dataset_json(root: str | Path, num_training: int, name: str,
                              channel_names: dict | None = None,
                              labels: dict | None = None) -> Path:
    return write_json_atomic(Path(root) / "dataset.json", {
        "channel_names": channel_names or NNUNET_CHANNELS,
        "labels": labels or NNUNET_LABELS,
        "numTraining": int(num_training),
        "file_ending": ".nii.gz",
        "name": name,
        "description": "written by petloop",
    })
