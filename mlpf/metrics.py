"""Physics metrics of a particle-flow reconstruction, per element (arXiv:2101.08578, sec. 4).

Both the truth and the reconstruction are arrays in the ygen format, (M, 7):
[class, charge, pt, eta, sin phi, cos phi, E], one row per detector element (all events
concatenated), class 0 where there is no particle. In this dataset an element has at most
one target and one reconstructed particle, so matching is by element.

    efficiency[c] = P(reco class == c | true class == c)
    fake_rate[c]  = P(true class == 0 | reco class == c)
    pt / energy resolution = IQR / median of reco / true, over elements where both the
                             truth and the reconstruction have a particle of the class.

The same function scores the rule-based PF candidates (ycand) as a reference.
"""

from __future__ import annotations

import numpy as np

from mlpf.data.format import CLASS_NAMES, N_CLASSES


def _ratio_stats(reco: np.ndarray, true: np.ndarray) -> dict:
    ok = true > 0
    r = reco[ok] / true[ok]
    if r.size < 2:
        return {"median": None, "iqr": None, "resolution": None, "n": int(r.size)}
    q25, q50, q75 = np.percentile(r, [25, 50, 75])
    res = float((q75 - q25) / q50) if q50 > 0 else None
    return {"median": float(q50), "iqr": float(q75 - q25), "resolution": res, "n": int(r.size)}


def physics_metrics(true: np.ndarray, reco: np.ndarray) -> dict:
    """Per-class efficiency, fake rate, pt and energy resolution; overall accuracy.

    Args: true, reco: (M, 7) arrays in the ygen format. Returns a JSON-ready dict.
    """
    true = np.asarray(true, dtype=np.float64)
    reco = np.asarray(reco, dtype=np.float64)
    if true.shape != reco.shape or true.ndim != 2 or true.shape[1] != 7:
        raise ValueError(f"expected two (M, 7) arrays, got {true.shape} and {reco.shape}")
    ct = true[:, 0].astype(int)
    cr = reco[:, 0].astype(int)
    out: dict = {"n_elements": int(len(ct)), "accuracy": float(np.mean(ct == cr)) if len(ct)
                 else None, "classes": {}}
    for c in range(1, N_CLASSES):
        is_t, is_r = ct == c, cr == c
        both = is_t & is_r
        out["classes"][CLASS_NAMES[c]] = {
            "n_true": int(is_t.sum()),
            "n_reco": int(is_r.sum()),
            "efficiency": float(both.sum() / is_t.sum()) if is_t.any() else None,
            "fake_rate": float((is_r & (ct == 0)).sum() / is_r.sum()) if is_r.any() else None,
            "pt": _ratio_stats(reco[both, 2], true[both, 2]),
            "energy": _ratio_stats(reco[both, 6], true[both, 6]),
        }
    matched = (ct != 0) & (cr != 0)
    out["all"] = {
        "efficiency": float(matched.sum() / (ct != 0).sum()) if (ct != 0).any() else None,
        "fake_rate": float(((cr != 0) & (ct == 0)).sum() / (cr != 0).sum())
        if (cr != 0).any() else None,
        "pt": _ratio_stats(reco[matched, 2], true[matched, 2]),
        "energy": _ratio_stats(reco[matched, 6], true[matched, 6]),
    }
    return out


def summary_line(m: dict) -> str:
    """One human-readable line of the headline numbers."""
    a = m["all"]

    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    return (f"accuracy {f(m['accuracy'])}  efficiency {f(a['efficiency'])}  "
            f"fake rate {f(a['fake_rate'])}  pt resolution {f(a['pt']['resolution'])}  "
            f"E resolution {f(a['energy']['resolution'])}")
