"""Many cases at once, each through the prediction engine, preprocessed ahead in worker processes.

Cases are loaded, checked, given their tracer and clicks and routed in this process; each model's
cases then go, a few at a time, through nnU-Net's ``preprocessing_iterator_fromnpy`` (background
worker processes preprocess the next cases while the network runs on the current one), and each
preprocessed case is handed to a session, whose engine makes the step. With
``num_processes=0`` the session preprocesses in this process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from petloop.io.checks import check_ct, check_pet
from petloop.io.clicks import Clicks
from petloop.io.layouts import CaseFiles
from petloop.io.volume import resample_to, write_volume
from petloop.nnunet.predict import Preprocessed, raw_input, uncrop_properties

from .body import body_box
from .pipeline import Pipeline, Session


def predict_cases(pipeline: Pipeline, cases: Sequence[CaseFiles], out: str | Path, *,
                  step: int | None = None, tracer: str | None = "auto",
                  time_budget: float | None = None, num_processes: int = 2, chunk: int = 4,
                  progress: Callable[[str], None] | None = None) -> list[Path]:
    out = Path(out)
    groups: dict[str, list] = defaultdict(list)
    for files in cases:
        case = files.load(with_label=False)
        check_pet(case.pet, str(files.pet), trust_suv=pipeline.trust_suv)
        check_ct(case.ct, str(files.ct))
        clicks = case.clicks or Clicks()
        clicks = clicks.step(step) if step is not None else clicks
        clicks.check_inside(case.pet.shape, str(files.clicks or "clicks"))
        ct = resample_to(case.ct, case.pet, moving_name=str(files.ct),
                         reference_name=str(files.pet))
        explicit = case.tracer if tracer == "case" else tracer
        t = pipeline.tracer(case.pet, explicit, str(files.pet)).tracer
        entry = pipeline.route(t, len(clicks.background), len(clicks.tumor))
        groups[entry.name].append((case.case_id, ct, case.pet, clicks, t, entry, files))
    written = []
    session = Session(pipeline, background=False)
    try:
        for jobs in groups.values():
            model = pipeline.model(jobs[0][5])
            published = model.encoding.mode == "published"
            for start in range(0, len(jobs), chunk):
                part = jobs[start:start + chunk]
                by_id = {j[0]: j for j in part}
                if num_processes > 0 and not published:
                    from nnunetv2.inference.data_iterators import preprocessing_iterator_fromnpy

                    p = model.predictor
                    boxes = {j[0]: body_box(j[1]) if pipeline.settings.crop == "body" else None
                             for j in part}
                    inputs = [raw_input(p, j[1], j[2], box=boxes[j[0]]) for j in part]
                    items = preprocessing_iterator_fromnpy(
                        [i[0] for i in inputs], None, [i[1] for i in inputs],
                        [j[0] for j in part], p.plans_manager, p.dataset_json,
                        p.configuration_manager, num_processes)
                    ready = ((it["ofile"], Preprocessed(
                        it["data"].numpy(),
                        uncrop_properties(it["data_properties"], boxes[it["ofile"]],
                                          by_id[it["ofile"]][2].shape,
                                          p.plans_manager.transpose_forward),
                        by_id[it["ofile"]][2])) for it in items)
                else:
                    ready = ((j[0], None) for j in part)
                for case_id, pre in ready:
                    _, ct, pet, clicks, t, _, files = by_id[case_id]
                    session.set_case(ct, pet, t, str(files.ct), str(files.pet),
                                     prepared=[(model, pre)] if pre is not None else ())
                    mask = session.set_clicks(clicks, time_budget).mask
                    written.append(write_volume(mask, out / f"{case_id}.nii.gz"))
                    if progress:
                        progress(case_id)
    finally:
        session.close()
    return written
