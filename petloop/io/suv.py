"""SUV from a PET series' DICOM header: body weight (SUVbw) and lean body mass (SUVlbm).

Pure functions over the header values (:class:`SuvInputs`, read from pydicom datasets by
:func:`suv_inputs`); :mod:`petloop.io.dicom` applies the factor to the rescaled pixels. The rules
follow the QIBA vendor-neutral pseudo-code and the public ``calculate-suv`` library, whose test
vectors the tests reproduce:

* **Units** (0054,1001): ``BQML`` (activity concentration, Bq/ml): SUVbw = value x weight (g) /
  decayed dose (Bq). ``CNTS`` (Philips): the private SUV scale factor (7053,1000) gives SUVbw
  directly, else the activity concentration scale factor (7053,1009) turns counts into Bq/ml.
  ``GML`` is SUVbw already (factor 1).
* **Corrections** (0028,0051 CorrectedImage): the image must be attenuation corrected (ATTN);
  decay corrected (DECY) unless DecayCorrection is NONE.
* **Decay** (0054,1102 DecayCorrection): ``START``: the image is decay corrected to the scan
  start, so the dose is decayed from injection to the scan start. ``ADMIN``: corrected to the
  administration time, the dose is taken as injected. ``NONE``: each slice is the activity at its
  own acquisition time, so each slice's dose is decayed to its AcquisitionDate/Time.
* **Scan start**: SeriesDate/Time when it is not after the earliest AcquisitionDate/Time of the
  series; otherwise (a series time rewritten by a later reconstruction) GE's private
  post-injection date-time (0009,100D, creator GEMS_PETD_01) if present, else the earliest
  acquisition date-time.
* **Injection**: RadiopharmaceuticalStartDateTime (0018,1078), else SeriesDate with
  RadiopharmaceuticalStartTime (0018,1072); half-life (0018,1075, s) and total dose
  (0018,1074, Bq) from the first item of RadiopharmaceuticalInformationSequence (0054,0016).
* **Weight** (0010,1030, kg) unless one is given; SUVlbm also needs PatientSize (0010,1020, m)
  and PatientSex (0010,0040) for the lean body mass of Janmahasatian et al. (2005).

All times of a study are read as the scanner's local time (time-zone offsets are dropped). A
missing or implausible value is a :class:`SuvError` that names the tag, never a default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

SuvMode = Literal["bw", "lbm"]
SUV_MODES: tuple[str, ...] = ("bw", "lbm")

PHILIPS_SUV_SCALE = (0x7053, 0x1000)
PHILIPS_ACTIVITY_SCALE = (0x7053, 0x1009)
GE_POST_INJECTION = (0x0009, 0x100D)

#: plausible ranges: what falls outside is an error naming the tag
WEIGHT_KG = (1.0, 500.0)
SIZE_M = (0.3, 2.6)
DOSE_BQ = (1e5, 1e11)  # 0.1 MBq to 100 GBq
HALF_LIFE_S = (1.0, 1e7)


class SuvError(ValueError):
    """A PET header from which no SUV can be computed; the message names the tag."""


@dataclass(frozen=True)
class SuvInputs:
    """What SUV needs from a PET series, one entry per slice where slices may differ."""

    units: str
    corrected: tuple[str, ...]
    decay_correction: str
    weight_kg: float | None
    size_m: float | None
    sex: str | None
    total_dose_bq: float | None
    half_life_s: float | None
    injection: datetime | None
    series: datetime | None
    acquisitions: tuple[datetime | None, ...]  # per slice
    philips_suv: tuple[float | None, ...] = ()  # per slice, (7053,1000)
    philips_activity: tuple[float | None, ...] = ()  # per slice, (7053,1009)
    ge_post_injection: datetime | None = None
    where: str = "PET"


# DICOM date and time values ---------------------------------------------------------------------
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def parse_tm(value: str, tag: str) -> timedelta:
    """A DICOM TM (``HH``, ``HHMM``, ``HHMMSS``, ``HHMMSS.FFFFFF``) as the time since midnight."""
    m = _TM.match(str(value).strip())
    if not m:
        raise SuvError(f"{tag}: {value!r} is not a DICOM time (HHMMSS.FFFFFF)")
    hh, mm, ss, frac = m.groups()
    h, mi, s = int(hh), int(mm or 0), int(ss or 0)
    if h > 23 or mi > 59 or s > 60:
        raise SuvError(f"{tag}: {value!r} is not a time of day")
    micro = int((frac or "0").ljust(6, "0"))  # the fraction's digits as written
    return timedelta(hours=h, minutes=mi, seconds=min(s, 59), microseconds=micro)


def parse_da(value: str, tag: str) -> datetime:
    text = str(value).strip()
    try:
        return datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise SuvError(f"{tag}: {value!r} is not a DICOM date (YYYYMMDD)") from None


def parse_dt(value: str, tag: str) -> datetime:
    """A DICOM DT (``YYYYMMDDHHMMSS.FFFFFF``, parts from the right optional, an offset
    ``&ZZXX`` dropped: a study's times are read as local time)."""
    text = re.sub(r"[+-]\d{4}$", "", str(value).strip())
    if len(text) < 8 or not text[:8].isdigit():
        raise SuvError(f"{tag}: {value!r} is not a DICOM date-time (YYYYMMDDHHMMSS)")
    day = parse_da(text[:8], tag)
    return day + (parse_tm(text[8:], tag) if len(text) > 8 else timedelta())


def _date_time(date, time, date_tag: str, time_tag: str) -> datetime | None:
    if not date or not time:
        return None
    return parse_da(date, date_tag) + parse_tm(time, time_tag)


# reading the inputs from pydicom datasets -------------------------------------------------------
def _number(value, tag: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SuvError(f"{tag}: {value!r} is not a number") from None
    if not math.isfinite(out):
        raise SuvError(f"{tag}: {value!r} is not a finite number")
    return out


def _private(ds, tag: tuple[int, int]):
    elem = ds.get(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip("\x00 ")
    return value


def suv_inputs(datasets: Sequence, where: str = "PET") -> SuvInputs:
    """The SUV inputs of a PET series from its slices' pydicom datasets (in slice order)."""
    if not datasets:
        raise SuvError(f"{where}: no slices")
    first = datasets[0]
    series_values = ("Units", "CorrectedImage", "DecayCorrection", "PatientWeight",
                     "PatientSize", "PatientSex", "SeriesDate", "SeriesTime")
    for ds in datasets[1:]:
        for kw in series_values:
            if str(ds.get(kw, "")) != str(first.get(kw, "")):
                raise SuvError(f"{where}: {kw} differs between the slices of one series "
                               f"({first.get(kw)!r} and {ds.get(kw)!r})")
    radio = first.get("RadiopharmaceuticalInformationSequence")
    item = radio[0] if radio else None
    injection = None
    if item is not None:
        if item.get("RadiopharmaceuticalStartDateTime"):
            injection = parse_dt(item.RadiopharmaceuticalStartDateTime,
                                 "RadiopharmaceuticalStartDateTime (0018,1078)")
        elif item.get("RadiopharmaceuticalStartTime") and first.get("SeriesDate"):
            injection = (parse_da(first.SeriesDate, "SeriesDate (0008,0021)")
                         + parse_tm(item.RadiopharmaceuticalStartTime,
                                    "RadiopharmaceuticalStartTime (0018,1072)"))
    corrected = first.get("CorrectedImage") or ()
    corrected = (corrected,) if isinstance(corrected, str) else tuple(corrected)
    ge = _private(first, GE_POST_INJECTION)
    return SuvInputs(
        units=str(first.get("Units", "")).strip().upper(),
        corrected=tuple(str(c).strip().upper() for c in corrected),
        decay_correction=str(first.get("DecayCorrection", "")).strip().upper(),
        weight_kg=_number(first.get("PatientWeight"), "PatientWeight (0010,1030)"),
        size_m=_number(first.get("PatientSize"), "PatientSize (0010,1020)"),
        sex=(str(first.PatientSex).strip().upper() or None) if first.get("PatientSex")
        else None,
        total_dose_bq=None if item is None else _number(
            item.get("RadionuclideTotalDose"), "RadionuclideTotalDose (0018,1074)"),
        half_life_s=None if item is None else _number(
            item.get("RadionuclideHalfLife"), "RadionuclideHalfLife (0018,1075)"),
        injection=injection,
        series=_date_time(first.get("SeriesDate"), first.get("SeriesTime"),
                          "SeriesDate (0008,0021)", "SeriesTime (0008,0031)"),
        acquisitions=tuple(_date_time(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"),
                                      "AcquisitionDate (0008,0022)",
                                      "AcquisitionTime (0008,0032)") for ds in datasets),
        philips_suv=tuple(_number(_private(ds, PHILIPS_SUV_SCALE),
                                  "Philips SUV scale factor (7053,1000)") for ds in datasets),
        philips_activity=tuple(_number(_private(ds, PHILIPS_ACTIVITY_SCALE),
                                       "Philips activity concentration scale factor "
                                       "(7053,1009)") for ds in datasets),
        ge_post_injection=parse_dt(ge, "GE post-injection date-time (0009,100D)") if ge
        else None,
        where=where)


# the factors ------------------------------------------------------------------------------------
def _check(value: float | None, tag: str, bounds: tuple[float, float], unit: str,
           where: str) -> float:
    if value is None:
        raise SuvError(f"{where}: {tag} is missing; no SUV without it")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise SuvError(f"{where}: {tag} is {value:g} {unit}, outside the plausible "
                       f"{lo:g} to {hi:g} {unit}")
    return float(value)


def lean_body_mass_kg(weight_kg: float, size_m: float, sex: str) -> float:
    """Janmahasatian et al. (2005): 9270 W / (6680 + 216 BMI) for men, 9270 W / (8780 + 244
    BMI) for women, BMI = W / H^2 (kg, m)."""
    bmi = weight_kg / size_m**2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    if sex == "F":
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise SuvError(f"PatientSex (0010,0040) is {sex!r}: the lean body mass needs M or F")


def scan_start(inputs: SuvInputs) -> datetime:
    """The series' scan start (see the module text)."""
    acquired = [t for t in inputs.acquisitions if t is not None]
    earliest = min(acquired) if acquired else None
    if inputs.series is not None and (earliest is None or inputs.series <= earliest):
        return inputs.series
    if inputs.ge_post_injection is not None:
        return inputs.ge_post_injection
    if earliest is not None:
        return earliest
    raise SuvError(f"{inputs.where}: SeriesDate/SeriesTime (0008,0021/0031) and "
                   "AcquisitionDate/AcquisitionTime (0008,0022/0032) are missing: no scan time")


def suv_factors(inputs: SuvInputs, *, weight_kg: float | None = None,
                mode: SuvMode = "bw") -> np.ndarray:
    """Per slice, the factor that turns the rescaled pixel values into SUV (``bw``: body
    weight; ``lbm``: lean body mass); ``weight_kg`` replaces PatientWeight."""
    where = inputs.where
    if mode not in SUV_MODES:
        raise ValueError(f"unknown SUV mode {mode!r}; use one of {', '.join(SUV_MODES)}")
    if "ATTN" not in inputs.corrected:
        raise SuvError(f"{where}: CorrectedImage (0028,0051) is {list(inputs.corrected)}, "
                       "without ATTN: no SUV from an image not corrected for attenuation")
    decay = inputs.decay_correction
    if decay not in ("START", "ADMIN", "NONE"):
        raise SuvError(f"{where}: DecayCorrection (0054,1102) is {decay!r}; petloop knows "
                       "START, ADMIN and NONE")
    if decay != "NONE" and "DECY" not in inputs.corrected:
        raise SuvError(f"{where}: CorrectedImage (0028,0051) is {list(inputs.corrected)}, "
                       f"without DECY, but DecayCorrection (0054,1102) is {decay}")
    n = len(inputs.acquisitions)
    weight = _check(inputs.weight_kg if weight_kg is None else weight_kg,
                    "PatientWeight (0010,1030)" if weight_kg is None else "the weight given",
                    WEIGHT_KG, "kg", where)
    body_g = 1000.0 * weight
    if mode == "lbm":
        size = _check(inputs.size_m, "PatientSize (0010,1020)", SIZE_M, "m", where)
        if inputs.sex is None:
            raise SuvError(f"{where}: PatientSex (0010,0040) is missing; the lean body mass "
                           "needs it")
        body_g = 1000.0 * lean_body_mass_kg(weight, size, inputs.sex)
    units = inputs.units
    if units == "GML":  # SUVbw already
        return np.full(n, body_g / (1000.0 * weight))
    if units not in ("BQML", "CNTS"):
        raise SuvError(f"{where}: Units (0054,1001) is {units!r}; petloop knows BQML, CNTS "
                       "(Philips) and GML")
    if units == "CNTS":
        suv_scale = inputs.philips_suv or (None,) * n
        if all(v not in (None, 0.0) for v in suv_scale):
            return np.asarray(suv_scale, dtype=np.float64) * (body_g / (1000.0 * weight))
        activity = inputs.philips_activity or (None,) * n
        if not all(v not in (None, 0.0) for v in activity):
            raise SuvError(f"{where}: Units (0054,1001) is CNTS but neither the Philips SUV "
                           "scale factor (7053,1000) nor the activity concentration scale "
                           "factor (7053,1009) is given on every slice")
        to_bqml = np.asarray(activity, dtype=np.float64)
    else:
        to_bqml = np.ones(n)
    dose = _check(inputs.total_dose_bq, "RadionuclideTotalDose (0018,1074)", DOSE_BQ, "Bq",
                  where)
    half_life = _check(inputs.half_life_s, "RadionuclideHalfLife (0018,1075)", HALF_LIFE_S, "s",
                       where)
    if inputs.injection is None:
        raise SuvError(f"{where}: RadiopharmaceuticalStartDateTime (0018,1078) and "
                       "RadiopharmaceuticalStartTime (0018,1072) are missing: no injection time")
    start = scan_start(inputs)
    if start < inputs.injection:
        raise SuvError(f"{where}: the injection ({inputs.injection.isoformat()}, "
                       "RadiopharmaceuticalStart...) is after the scan start "
                       f"({start.isoformat()})")
    if decay == "ADMIN":
        decayed = np.full(n, dose)
    elif decay == "START":
        seconds = (start - inputs.injection).total_seconds()
        decayed = np.full(n, dose * 2.0 ** (-seconds / half_life))
    else:  # NONE: each slice at its own acquisition time
        if any(t is None for t in inputs.acquisitions):
            raise SuvError(f"{where}: DecayCorrection (0054,1102) is NONE, so every slice needs "
                           "AcquisitionDate/AcquisitionTime (0008,0022/0032)")
        seconds = np.array([(t - inputs.injection).total_seconds() for t in inputs.acquisitions])
        if (seconds < 0).any():
            raise SuvError(f"{where}: a slice's AcquisitionDate/Time is before the injection")
        decayed = dose * 2.0 ** (-seconds / half_life)
    return to_bqml * body_g / decayed


__all__ = ["SUV_MODES", "SuvError", "SuvInputs", "SuvMode", "lean_body_mass_kg", "parse_da",
           "parse_dt", "parse_tm", "scan_start", "suv_factors", "suv_inputs"]
