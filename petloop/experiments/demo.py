"""The paper's interactive experiment on held-out phantoms with a model set (``petloop demo``).

Held-out phantoms (a seed never used in training, both tracers, some negative controls) go
through the 11 click steps. The columns come from the set's routing: each model of a tracer's
routing answering alone, and where the routing has several models the hybrid it makes of them
(for the bundled set: FDG v4, v3 and hybrid, PSMA v2), the hybrid once more with error-driven
clicks, and the paper's exact configuration (BIRTH's routing over the same two FDG models, its
thresholds and its 40 s budget under the published rule). The metrics module scores them:
tables like the paper's Tables 2 and 3, plots, a Markdown report with a PET MIP and the
predicted mask of one case, and the claims of :mod:`petloop.experiments.findings`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from petloop.inference.calibrate import CALIBRATION
from petloop.inference.evaluate import run_steps
from petloop.inference.modelset import InferenceSettings, ModelSet, load_model_set
from petloop.inference.pipeline import Pipeline, resolve_precision
from petloop.inference.postprocess import DEFAULT_THRESHOLDS, PostProcessing
from petloop.inference.routing import Route, Routing
from petloop.io.atomic import write_json_atomic, write_text_atomic
from petloop.io.clicks import read_clicks
from petloop.io.layouts import find_cases
from petloop.io.volume import read_volume
from petloop.metrics.interactive import (
    Summary,
    evaluate_model,
    merge,
    records_csv,
    summarize,
    summary_metrics,
    to_json_safe,
)
from petloop.metrics.plots import plot_curves
from petloop.metrics.reference import EANM_FRACTION, MARGIN, ReferenceScore, reference_metrics
from petloop.metrics.tables import HEAD
from petloop.options import MAX_MIRRORS, BudgetMode
from petloop.phantom import PRESETS, PhantomConfig, write_phantoms

from .findings import ERROR_DRIVEN, HYBRID, N_STEPS, Roles, findings, short_name

#: the paper's exact configuration as one more FDG column: BIRTH's routing (the stochastic model
#: below 5 background clicks, the full-guidance model from 5), its SUV thresholds (FDG 1.5, PSMA
#: 1.0) and its 40 s test-time augmentation budget per prediction under its published rule
BIRTH = "birth_paper"
BIRTH_BUDGET = 40.0
# mirrored passes the demo runs where the set asks for more: none, so that the paper's column
# (whose 40 s budget buys all seven mirrored passes on a CPU) and four phantoms fit its minutes
DEMO_MIRRORS = 0
#: the demo's phantom grids per tracer (presets of petloop.phantom): adult trunk crops, a dozen
#: tiles of the bundled networks each (the default), whole adult bodies at the plan's spacing,
#: or the autoPET grids (each tracer its own)
GRIDS = {"trunk": {"fdg": "trunk", "psma": "trunk"},
         "quick": {"fdg": "quick", "psma": "quick"},
         "autopet": {"fdg": "autopet-fdg", "psma": "autopet-psma"}}


@dataclass(frozen=True)
class DemoConfig:
    models: Path
    out: Path = Path("demo_out")
    cases: int = 4
    seed: int = 9001  # never used for training phantoms
    grid: str = "trunk"  # a key of GRIDS: the phantoms' grid per tracer
    negative_fraction: float = 0.2
    clicks: str = "official"
    device: str = "cpu"
    precision: str = "auto"  # fp32, bf16 or auto (bf16 where the CPU has it)
    time_budget: float | None = None  # seconds per prediction; caps the mirrored passes (TTA)
    window: str | None = None  # sliding or whole; None: the model set's inference.window
    mirrors: int | None = None  # mirrored passes; None: the set's, at most DEMO_MIRRORS
    steps: int = N_STEPS
    compare_error_driven: bool = True  # also run the FDG hybrid with error-driven clicks
    paper_column: bool = True  # also run the paper's exact configuration (BIRTH)

    def __post_init__(self):
        if self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r}; use one of {', '.join(GRIDS)}")


@dataclass(frozen=True)
class Column:
    """One column of the experiment: a routing run through the click steps (or, without one,
    the hybrid assembled from its models' columns), with its own post-processing and budget
    where it has them (the paper's configuration)."""

    name: str
    tracer: str
    routing: Routing | None  # None: assembled from other columns by the routing (hybrid)
    postprocessing: PostProcessing | None = None  # None: the model set's
    time_budget: float | None = None  # this column's own budget
    budget_mode: BudgetMode | None = None  # and how it chooses the mirrored passes


def birth_column(model_set: ModelSet) -> Column | None:
    """The paper's exact configuration over the set's two FDG models, or None without two."""
    models = model_set.routing["fdg"].clicks.models if "fdg" in model_set.routing else ()
    if len(models) != 2:
        return None
    stochastic, full = models  # the routing lists the stochastic model first
    return Column(BIRTH, "fdg", Routing.of(Route(stochastic, max_background_clicks=4),
                                           Route(full)),
                  PostProcessing(DEFAULT_THRESHOLDS), BIRTH_BUDGET, "birth")


def inference_text(settings: InferenceSettings, time_budget: float | None = None) -> str:
    """How the networks were run, in words: window and test-time mirroring."""
    window = ("whole-volume window (one pass over each volume)" if settings.window == "whole"
              else "nnU-Net's sliding window")
    most = MAX_MIRRORS if settings.mirrors is None else settings.mirrors
    time_budget = settings.budget if time_budget is None else time_budget
    if time_budget and most and settings.budget_mode == "birth":
        tta = (f"test-time mirroring within {time_budget:g} s per prediction by BIRTH's "
               f"published rule (per tile, at most {most} mirrored passes)")
    elif time_budget and most:
        tta = (f"test-time mirroring within {time_budget:g} s per prediction (as many of "
               f"{most} mirrored passes as fit after the plain one)")
    elif settings.mirrors:
        tta = f"test-time mirroring: {settings.mirrors} mirrored passes per prediction"
    else:
        tta = "no test-time mirroring"
    return f"{window}; {tta}"


def grid_text(grid: str) -> str:
    """The demo's phantom grids in words."""
    parts = []
    for tracer, preset in GRIDS[grid].items():
        shape, spacing = PRESETS[preset]
        parts.append(f"{tracer.upper()} {' x '.join(map(str, shape))} voxels of "
                     f"{' x '.join(f'{v:g}' for v in spacing)} mm ({preset})")
    if len(set(GRIDS[grid].values())) == 1:
        return parts[0].split(" ", 1)[1]
    return ", ".join(parts)


def demo_mirrors(model_set: ModelSet, asked: int | None) -> int | None:
    """The mirrored passes the demo runs: what ``--mirrors`` asks, else the set's own number
    capped at :data:`DEMO_MIRRORS` (a set without a number keeps none, or its time budget's)."""
    if asked is not None or model_set.inference.mirrors is None:
        return asked
    return min(DEMO_MIRRORS, model_set.inference.mirrors)


def _calibrated(model_set: ModelSet, part: str = "suv_threshold") -> dict:
    """Per tracer, what ``models calibrate`` fitted (``calibration.json`` beside the manifest):
    the thresholds (``suv_threshold``) or a hand-over fitted with error-driven clicks
    (``handover``)."""
    path = Path(model_set.root) / CALIBRATION
    return json.loads(path.read_text(encoding="utf-8")).get(part, {}) \
        if path.is_file() else {}


def threshold_text(model_set: ModelSet) -> str:
    """The SUV thresholds and where they came from."""
    fitted = _calibrated(model_set)
    parts = []
    for tracer, value in model_set.suv_threshold.items():
        cal = fitted.get(tracer)
        origin = (f"fitted on {len(cal['cases'])} validation cases" if cal and
                  cal.get("chosen") == value else "as set")
        parts.append(f"{tracer.upper()} {value:g} ({origin})")
    return "SUV threshold " + ", ".join(parts)


def routing_text(model_set: ModelSet) -> str:
    """Which model answers which clicks, per tracer with several routes, and where a fitted
    hand-over came from."""
    fitted, reader = _calibrated(model_set), _calibrated(model_set, "handover")
    parts = []
    for tracer, routing in model_set.routing.items():
        routing = routing.clicks  # the demo's clicks; scribble routes are autopet5's
        if len(routing.models) < 2:
            continue
        rules = []
        for r in routing.routes:
            when = [f"up to {r.max_background_clicks} background clicks"
                    if r.max_background_clicks is not None else "",
                    f"from {r.min_foreground_clicks} lesion click(s)"
                    if r.min_foreground_clicks is not None else ""]
            when = " and ".join(w for w in when if w) or "otherwise"
            rules.append(f"{short_name(r.model)} {when}")
        at = routing.handover
        cal = reader.get(tracer, {})
        if at is None or cal.get("chosen_handover") != at:
            cal = fitted.get(tracer, {})
        clicks = cal.get("clicks", "official")
        how = "" if clicks == "official" else f" with {clicks} clicks"
        origin = (f" (hand-over fitted on {len(cal['cases'])} validation cases{how})"
                  if at is not None and cal.get("chosen_handover") == at else "")
        parts.append(f"{tracer.upper()} {', '.join(rules)}{origin}")
    return ("routing " + "; ".join(parts)) if parts else "one model per tracer"


def columns(model_set: ModelSet) -> list[Column]:
    """From the set's routing: one column per model and tracer, plus the hybrid where a
    tracer's routing has several models."""
    out = []
    for tracer, routing in model_set.routing.items():
        routing = routing.clicks
        out += [Column(short_name(m), tracer, Routing.single(m)) for m in routing.models]
        if len(routing.models) > 1:
            out.append(Column(HYBRID, tracer, None))
    return out


def assemble_hybrid(model_set: ModelSet, tracer: str, case_ids, folders: dict, out: Path,
                    steps: int) -> Path:
    """The routing's choice at each step, from the single-model predictions (official clicks
    are the same for every model, so nothing needs to run again)."""
    out.mkdir(parents=True, exist_ok=True)
    for case in case_ids:
        clicks = read_clicks(next(iter(folders.values())) / "clicks" / f"{case}_clicks.json")
        for k in range(steps):
            at = clicks.step(k)
            entry = model_set.route(tracer, len(at.background), len(at.tumor))
            shutil.copyfile(folders[short_name(entry.name)] / f"{case}_step{k}.nii.gz",
                            out / f"{case}_step{k}.nii.gz")
    return out


def mip_overlay(case_files, mask_path: Path, out: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    from petloop.io.atomic import write_figure
    from petloop.tracer.mip import raw_mips

    case = case_files.load()
    mask = read_volume(mask_path)
    cor, _ = raw_mips(case.pet)
    gt_cor, _ = raw_mips(case.label) if case.label is not None else (None, None)
    pred_cor, _ = raw_mips(mask)
    sx, _, sz = case.pet.spacing
    tall = cor.shape[0] * sz / (cor.shape[1] * sx)  # the MIP's height over its width, in mm
    fig = Figure(figsize=(4, min(max(4 * tall + 0.9, 2.5), 8)))
    ax = fig.subplots()
    ax.imshow(cor, cmap="gray_r", vmin=0, vmax=10, aspect=sz / sx, interpolation="nearest")
    if pred_cor is not None and pred_cor.any():
        ax.contour(pred_cor, levels=[0.5], colors="red", linewidths=0.9)
    if gt_cor is not None and gt_cor.any():
        ax.contour(gt_cor, levels=[0.5], colors="deepskyblue", linewidths=0.7, linestyles="--")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return write_figure(fig, out, dpi=110)


def markdown_table(summary: Summary, tracer: str | None, title: str) -> str:
    models = [m for m, e in summary["models"].items()
              if tracer is None or tracer in e["tracers"]]
    if not models:
        return ""
    metrics = summary_metrics(summary)
    word = "step" if summary.get("protocol") == "autopet5" else "clicks"
    head = f"| {word} | " + " | ".join(f"{HEAD[metric].split(' ')[0]} {m}" for metric in metrics
                                      for m in models) + " |"
    lines = [f"**{title}**", "", head, "|" + "---|" * (1 + len(metrics) * len(models))]
    for step in range(summary["n_steps"]):
        cells = []
        for metric in metrics:
            for m in models:
                src = summary["models"][m]
                src = src if tracer is None else src["tracers"][tracer]
                v = src["per_step"][metric][step]["mean"]
                cells.append("NaN" if v is None or v != v else f"{v:.3f}")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def held_out_cases(config: DemoConfig, out: Path) -> tuple[list, dict[str, list]]:
    """The demo's held-out phantoms, written under ``out/phantoms`` (each tracer its own
    folder): all cases, and the cases by tracer."""
    phantoms = out / "phantoms"
    if phantoms.exists():
        shutil.rmtree(phantoms)
    cases = []
    for n, (tracer, preset) in enumerate(GRIDS[config.grid].items()):
        count = (config.cases + 1 - n) // 2  # FDG gets the odd one
        if count:  # each tracer in its own folder, with its own phantom_config.json
            write_phantoms(PhantomConfig.preset(preset, seed=config.seed, tracer=tracer,
                                                negative_fraction=config.negative_fraction),
                           phantoms / tracer, count)
            cases += find_cases(phantoms / tracer)
    return cases, {t: [c for c in cases if c.tracer == t] for t in ("fdg", "psma")}


def run_demo(config: DemoConfig, progress: Callable[[str, int, int], None] | None = None
             ) -> dict:
    out = Path(config.out)
    model_set = load_model_set(config.models)
    config = replace(config, mirrors=demo_mirrors(model_set, config.mirrors))
    settings = model_set.inference.override(window=config.window, mirrors=config.mirrors)
    cases, by_tracer = held_out_cases(config, out)
    cols = columns(model_set)
    if config.clicks == "official" and config.compare_error_driven and by_tracer["fdg"] and \
            "fdg" in model_set.routing:
        cols.append(Column(ERROR_DRIVEN, "fdg", None))
    paper = birth_column(model_set) if config.paper_column else None
    if paper is not None:
        cols.append(paper)
    lesioned = [c for c in by_tracer["fdg"] if not c.read_meta().get("negative_control")]
    total = sum(len(by_tracer[c.tracer]) for c in cols if c.routing is not None) + \
        (len(lesioned) if any(c.name == ERROR_DRIVEN for c in cols) else 0)
    done = 0
    folders: dict[str, dict[str, Path]] = {}
    evaluations = []
    pred_root = out / "predictions"
    # one set of loaded networks for every column (the hybrids route over the same models)
    pipeline = Pipeline(model_set, device=config.device, precision=config.precision,
                        window=config.window, mirrors=config.mirrors, budget=config.time_budget)
    for col in cols:
        # error-driven clicks only where there is a lesion to find
        these = lesioned if col.name == ERROR_DRIVEN else by_tracer[col.tracer]
        if not these:
            continue
        folder = pred_root / f"{col.tracer}_{col.name}"
        mode = "error-driven" if col.name == ERROR_DRIVEN else config.clicks
        if col.routing is None and mode == "official":
            assemble_hybrid(model_set, col.tracer, [c.case_id for c in these],
                            folders[col.tracer], folder, config.steps)
        else:

            def tick(case_id, col=col):
                nonlocal done
                done += 1
                if progress:
                    progress(f"{col.tracer} {col.name}: {case_id}", done, total)

            pipe = pipeline.sharing(routing={col.tracer: col.routing or
                                             model_set.routing[col.tracer]},
                                    postprocessing=col.postprocessing)
            if col.time_budget is not None:  # its own budget decides the mirrored passes
                pipe.settings = pipe.settings.override(mirrors=MAX_MIRRORS,
                                                       budget=col.time_budget,
                                                       budget_mode=col.budget_mode)
            run_steps(pipe, these, folder, clicks_mode=mode, steps=config.steps,
                      tracer="case", progress=tick)
        folders.setdefault(col.tracer, {})[col.name] = folder
        evaluations.append(evaluate_model(these, folder, col.name, config.steps))
    ev = merge(evaluations)
    summary = summarize(ev)
    references = {t: reference_metrics(group, t) for t, group in by_tracer.items() if group}
    write_text_atomic(out / "metrics_per_step.csv", records_csv(ev.records))
    write_json_atomic(out / "summary.json", to_json_safe({
        **summary, "reference": {t: r.to_json() for t, r in references.items()},
        "demo": {k: str(v) for k, v in asdict(config).items()},
        "inference": settings.to_json(), "suv_threshold": model_set.suv_threshold}))
    plots = {}
    for tracer, group in by_tracer.items():
        if group:
            ref = references[tracer]
            plots[tracer] = plot_curves(summary, out / f"curves_{tracer}.png",
                                        title=f"{model_set.name} on held-out phantoms",
                                        tracer=tracer,
                                        reference=(REFERENCE_LABEL, ref.to_json())
                                        if ref.cases else None)
    example = next((c for c in by_tracer["fdg"]
                    if c.label is not None and read_volume(c.label).array.any()), None)
    overlay = None
    if example is not None:
        best = HYBRID if HYBRID in folders["fdg"] else next(iter(folders["fdg"]))
        last = config.steps - 1
        overlay = mip_overlay(example, folders["fdg"][best] / f"{example.case_id}_step{last}"
                              ".nii.gz", out / "mip_overlay.png",
                              f"{example.case_id}\n{best}, {last} clicks\n"
                              "red: prediction, blue dashed: truth")
    negatives = sum(bool(c.read_meta().get("negative_control")) for c in cases)
    report = [f"# petloop demo: {model_set.name} on held-out phantoms", "",
              f"{len(cases)} adult phantoms (seed {config.seed}, never used in training; "
              f"{grid_text(config.grid)}): {len(by_tracer['fdg'])} FDG, "
              f"{len(by_tracer['psma'])} PSMA ({negatives} negative control(s)); "
              f"{config.clicks} clicks; mean over cases per click step; "
              f"network arithmetic {resolve_precision(config.precision, config.device)} on "
              f"{config.device}; "
              f"{inference_text(settings, config.time_budget)}; "
              f"{threshold_text(model_set)}; {routing_text(model_set)}."
              + (f" The paper's configuration ({BIRTH}): BIRTH's routing over "
                 f"{' and '.join(paper.routing.models)}, SUV thresholds "
                 f"{', '.join(f'{t.upper()} {v:g}' for t, v in DEFAULT_THRESHOLDS.items())}, "
                 f"test-time mirroring within {BIRTH_BUDGET:g} s per prediction by its "
                 "published rule." if paper is not None else ""), ""]
    for tracer in ("fdg", "psma"):
        if by_tracer[tracer]:
            report.append(markdown_table(summary, tracer, f"{tracer.upper()} phantoms"))
            report.append(reference_line(references[tracer]) + "\n")
            report.append(f"![{tracer} curves]({plots[tracer].name})\n")
    if overlay is not None:
        report.append(f"![PET MIP with the predicted mask]({overlay.name})\n")
    found = findings(summary, config.steps, references.get("fdg"), ev.records,
                     roles=Roles.of(model_set.routing.get("fdg")))
    report += ["## What the numbers show", "", "| claim | observed | holds |", "|---|---|---|"]
    report += [f"| {f.claim} | {f.observed} | {'yes' if f.holds else 'no'} |" for f in found]
    report += ["", PAIRED_NOTE]
    write_text_atomic(out / "report.md", "\n".join(report) + "\n")
    write_json_atomic(out / "findings.json", to_json_safe([asdict(f) for f in found]))
    return {"summary": summary, "report": out / "report.md", "plots": plots,
            "overlay": overlay, "out": out, "findings": found, "references": references}


REFERENCE_LABEL = f"{EANM_FRACTION:.0%} SUVmax isocontour around each true lesion"


def reference_line(ref: ReferenceScore) -> str:
    if not ref.cases:
        return f"Reference: no {ref.tracer.upper()} case has a lesion."
    return (f"Reference, not a method (it is told where every lesion is): the {REFERENCE_LABEL} "
            f"(the EANM delineation, within {MARGIN} voxels of the lesion) reaches Dice "
            f"{ref.dice:.3f}, FPV {ref.fpv:.2f} ml and FNV {ref.fnv:.2f} ml on the "
            f"{ref.cases} {ref.tracer.upper()} case(s) with lesions: what the phantoms' "
            "resolution and PET blur allow a contour drawn from the PET alone.")


PAIRED_NOTE = ("A check holds or not on the means. The difference beside it is paired by case "
               "(the same phantoms through both), with its 95% Student t interval; where that "
               "interval holds 0, these phantoms are too few to tell the two apart, whichever "
               "way the means fall.")


