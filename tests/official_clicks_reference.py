"""A slow, literal re-statement of the organizers' click simulation, for testing petloop's.

Full-volume masks and distance transforms for every component, recomputed at every fill-up
click, exactly as the official script does (NumPy in place of CuPy, SciPy's EDT in place of
cuCIM's), with the same random calls in the same order.
"""

from __future__ import annotations

import random

import cc3d
import numpy as np
from scipy import ndimage


def _perturb(rnd, offset, click, allowed):
    if offset is None:
        return [int(c) for c in click]
    moved = [int(click[a]) + rnd.randint(0, int(offset)) for a in range(3)]
    if all(m < s for m, s in zip(moved, allowed.shape, strict=True)) and allowed[tuple(moved)]:
        return moved
    return [int(c) for c in click]


def reference_clicks(label_im, pet_img, budget=10, seed=42, center_offset=None,
                     edge_offset=None, bg=True):
    rs = np.random.RandomState(seed)
    rnd = random.Random(seed)
    clicks = {"tumor": [], "background": []}
    label_f = np.asfortranarray(label_im)
    if np.sum(label_im) != 0:
        cc = cc3d.connected_components(label_f, connectivity=26)
        unique = np.unique(cc)[1:]
        sampled = rs.choice(unique, size=min(budget, len(unique)), replace=False)
        for lab in sampled:
            edt = ndimage.distance_transform_edt(cc == lab)
            centre = np.unravel_index(np.argmax(edt), edt.shape)
            clicks["tumor"].append(_perturb(rnd, center_offset, centre, label_im))
        n = len(clicks["tumor"])
        while n < budget:
            for lab in sampled:
                mask = cc == lab
                edt = ndimage.distance_transform_edt(mask)
                inv = (np.max(edt) - edt) * (edt > 0)
                boundary = (inv == np.max(inv)) * (mask > 0)
                idx = np.array(np.nonzero(boundary)).T
                click = idx[rs.choice(idx.shape[0])]
                clicks["tumor"].append(_perturb(rnd, edge_offset, click, label_im))
                n += 1
                if n == budget:
                    break
    if bg:
        pet64 = pet_img.astype(np.float64)
        th = np.percentile(pet64[label_im == 0], 99.75)
        hot = (pet64 > th) * (label_im == 0)
        cc = cc3d.connected_components(np.asfortranarray(hot), connectivity=26)
        unique = np.unique(cc)[1:]
        sampled = rs.choice(unique, size=min(budget, len(unique)), replace=False)
        outside = ~label_im.astype(bool)
        for lab in sampled:
            edt = ndimage.distance_transform_edt(cc == lab)
            centre = np.unravel_index(np.argmax(edt), edt.shape)
            clicks["background"].append(_perturb(rnd, center_offset, centre, outside))
        n = len(clicks["background"])
        while n < budget and len(sampled):
            for lab in sampled:
                mask = cc == lab
                edt = ndimage.distance_transform_edt(mask)
                inv = (np.max(edt) - edt) * (edt > 0)
                while True:
                    boundary = (inv == np.max(inv)) * (mask == 0)
                    idx = np.array(np.nonzero(boundary)).T
                    if len(idx) == 0:
                        idx = np.array(np.nonzero(mask)).T
                    click = idx[rs.choice(idx.shape[0])]
                    if not label_im[tuple(click)]:
                        break
                clicks["background"].append(_perturb(rnd, edge_offset, click, outside))
                n += 1
                if n == budget:
                    break
    return {k: [tuple(int(c) for c in p) for p in v] for k, v in clicks.items()}
