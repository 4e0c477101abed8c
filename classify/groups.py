"""Per-group metrics: for whom does the classifier fail? Pure numpy; the output is JSON-ready.

Groups come from a store's per-image attributes, indexed by the caller to the evaluated rows: the true sex
(family ``sex``); UTKFace ``race`` (`UTKFACE_RACES`), ``age`` binned into `AGE_BINS` and ``race x age``;
every other attribute with at most `MAX_LEVELS` distinct values (each CelebA attribute: ``yes``/``no``);
the others (``identity``) are listed under ``skipped``. A negative code means "no value" (`MISSING`): such
a row belongs to no group of that family; it is counted, not guessed.

Per group: n, n_male, n_female, accuracy, male recall (TPR), female recall (TNR; None without a row of that
sex), each with a seeded percentile bootstrap interval (rows resampled within the group, the seed derived
from the group's name, so adding a group never changes another's interval). Groups under ``min_n`` rows
are reported with ``too_small: true`` and left out of the summaries, never hidden.

Summary: over all rows, balanced accuracy and the recall gap |TPR - TNR|; over the groups not too small,
the worst group, the largest accuracy gap within one family, and the equalised-odds difference (per family,
the larger of the TPR and the FPR spread, as fairlearn defines it; not for ``sex``: one rate per group).
"""
from __future__ import annotations

import zlib

import numpy as np

from classify.metrics import check_binary

GROUPS_VERSION = 1
MISSING = -1
AGE_BINS = ((0, 2), (3, 9), (10, 19), (20, 39), (40, 59), (60, None))
UTKFACE_RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}
AGE_LABELS = tuple(f"{low}-{high}" if high is not None else f"{low}+" for low, high in AGE_BINS)
NOT_GROUPS = ("Male",)  # the label itself: the `sex` family already covers it
LEVEL = 0.95  # of the bootstrap intervals
MAX_LEVELS = 10  # an attribute with more distinct values is no grouping


def bin_ages(age: np.ndarray) -> np.ndarray:
    """Index into `AGE_BINS` per row, `MISSING` for a negative (unknown) age."""
    age = np.asarray(age, dtype=np.int64)
    uppers = np.array([high for _, high in AGE_BINS[:-1]])
    return np.where(age < 0, MISSING, np.searchsorted(uppers, age, side="left"))


def group_families(gender: np.ndarray,
                   attributes: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """({family: {group name: row mask}}, {skipped attribute: why}) for the evaluated rows."""
    families = {"sex": {"male": gender == 1, "female": gender == 0}}
    skipped = {}
    if "age" in attributes:
        ages = bin_ages(attributes["age"])
        families["age"] = {label: ages == code for code, label in enumerate(AGE_LABELS)}
    if "race" in attributes:
        races = np.asarray(attributes["race"])
        families["race"] = {label: races == code for code, label in UTKFACE_RACES.items()}
        if "age" in attributes:
            families["race x age"] = {f"{race}, {age}": race_mask & age_mask
                                      for race, race_mask in families["race"].items()
                                      for age, age_mask in families["age"].items()}
    for name in sorted(set(attributes) - {"age", "race", *NOT_GROUPS}):
        values = np.asarray(attributes[name])
        levels = _levels(values)
        if len(levels) > MAX_LEVELS:
            skipped[name] = f"{len(levels)} distinct values (more than {MAX_LEVELS}): not a grouping"
        elif set(levels.tolist()) <= {0, 1}:
            families[name] = {"yes": values == 1, "no": values == 0}
        else:
            families[name] = {str(level): values == level for level in levels}
    return families, skipped


def group_metrics(y_true: np.ndarray, y_pred: np.ndarray, attributes: dict[str, np.ndarray], *,
                  min_n: int = 30, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Per-group metrics with bootstrap intervals and the fairness summary (see the module docstring)."""
    male, predicted_male = check_binary(y_true, y_pred)
    wrong = [name for name, values in attributes.items() if np.shape(values) != male.shape]
    if wrong:
        raise ValueError(f"attributes {', '.join(wrong)} do not have one value per evaluated row "
                         f"({len(male)}); index them with the split's store rows first")
    y_true, y_pred = male.astype(np.int8), predicted_male.astype(np.int8)
    families, skipped = group_families(y_true, attributes)
    out_families = {}
    for family, masks in families.items():
        groups = [_group_row(name, y_true[mask], y_pred[mask], min_n=min_n, n_resamples=n_resamples,
                             seed=[seed, zlib.crc32(f"{family}\0{name}".encode())])
                  for name, mask in masks.items()]
        in_any = np.any(np.stack(list(masks.values())), axis=0)  # every family has groups
        out_families[family] = {"groups": groups, "n_missing": int((~in_any).sum()),
                                **_family_summary(family, groups)}
    return {"kind": "group-metrics", "version": GROUPS_VERSION, "min_n": min_n, "n_resamples": n_resamples,
            "seed": seed, "level": LEVEL, "missing_code": MISSING, "age_bins": list(AGE_LABELS),
            "families": out_families, "skipped": skipped,
            "summary": _summary(y_true, y_pred, out_families)}


def rates(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """n, n_male, n_female, accuracy, male recall (TPR), female recall (TNR); None where undefined."""
    t, p = y_true == 1, y_pred == 1
    n_male, n_female = int(t.sum()), int((~t).sum())
    return {"n": int(t.size), "n_male": n_male, "n_female": n_female,
            "accuracy": float((t == p).mean()) if t.size else None,
            "male_recall": float((t & p).sum() / n_male) if n_male else None,
            "female_recall": float((~t & ~p).sum() / n_female) if n_female else None}


def decision_recalls(y, pred) -> dict:
    """Accuracy, male and female recall and their gap of one decision (JSON-ready)."""
    r = rates(y, pred)
    return {"accuracy": r["accuracy"], "male recall": r["male_recall"], "female recall": r["female_recall"],
            "recall gap": abs(r["male_recall"] - r["female_recall"])
            if None not in (r["male_recall"], r["female_recall"]) else None}


def _group_row(name: str, y_true, y_pred, *, min_n: int, n_resamples: int, seed: list[int]) -> dict:
    """`rates` with percentile intervals of accuracy, TPR and TNR; resamples without a row of a sex are
    skipped for its recall (NaN), so a recall's interval comes from the resamples where it is defined."""
    row = {"group": name, **rates(y_true, y_pred), "too_small": bool(len(y_true) < min_n)}
    if len(y_true) == 0:
        return {**row, "accuracy_ci": None, "male_recall_ci": None, "female_recall_ci": None}
    codes = (2 * y_true + y_pred).astype(np.int64)  # 0 tn, 1 fp, 2 fn, 3 tp
    rng = np.random.default_rng(seed)
    # Resampling n rows with replacement matters only through how many of each code it draws: exactly
    # multinomial(n, code frequencies), the same bootstrap in O(resamples), not O(resamples x n).
    frequencies = np.bincount(codes, minlength=4) / len(codes)
    tn, fp, fn, tp = rng.multinomial(len(codes), frequencies, size=n_resamples).T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {"accuracy": (tn + tp) / len(codes), "male_recall": tp / (tp + fn),
                  "female_recall": tn / (tn + fp)}
    tail = 100 * (1 - LEVEL) / 2
    for metric, v in values.items():
        row[f"{metric}_ci"] = (np.nanpercentile(v, [tail, 100 - tail]).tolist()
                               if row[metric] is not None and np.isfinite(v).any() else None)
    return row


def _family_summary(family: str, groups: list[dict]) -> dict:
    sized = [g for g in groups if not g["too_small"] and g["n"]]
    if not sized:
        return {"worst_group": None, "accuracy_gap": None, "equalised_odds_difference": None}
    worst, best = min(sized, key=_accuracy_key), max(sized, key=_accuracy_key)
    return {"worst_group": worst["group"], "accuracy_gap": best["accuracy"] - worst["accuracy"],
            "equalised_odds_difference": None if family == "sex" else _equalised_odds(sized)}


def _accuracy_key(group: dict) -> tuple:
    return group["accuracy"], group["group"]


def _equalised_odds(groups: list[dict]) -> float | None:
    """max(TPR spread, FPR spread) over groups; FPR = 1 - TNR, so the FPR spread is the TNR spread."""
    defined = [[g[rate] for g in groups if g[rate] is not None] for rate in ("male_recall", "female_recall")]
    spreads = [max(values) - min(values) for values in defined if len(values) >= 2]
    return max(spreads) if spreads else None


def _summary(y_true, y_pred, families: dict) -> dict:
    overall = rates(y_true, y_pred)
    recalls = [overall["male_recall"], overall["female_recall"]]
    defined = [r for r in recalls if r is not None]
    sized = [(family, g) for family, data in families.items() for g in data["groups"]
             if not g["too_small"] and g["n"]]
    worst = min(sized, key=lambda item: _accuracy_key(item[1])) if sized else None
    return {**overall, "balanced_accuracy": float(np.mean(defined)) if defined else None,
            "recall_gap": abs(recalls[0] - recalls[1]) if len(defined) == 2 else None,
            "worst_group": None if worst is None else {"family": worst[0], "group": worst[1]["group"],
                                                       "n": worst[1]["n"], "accuracy": worst[1]["accuracy"]},
            "largest_accuracy_gap": _largest(families, "accuracy_gap"),
            "equalised_odds_difference": _largest(families, "equalised_odds_difference")}


def _largest(families: dict, key: str) -> dict | None:
    """{"family", "value"} of the family with the largest ``key`` (ties: the later name), None if none has one."""
    values = [(data[key], family) for family, data in families.items() if data[key] is not None]
    value, family = max(values) if values else (None, None)
    return None if family is None else {"family": family, "value": value}


def row_groups(attributes: dict[str, np.ndarray], row: int) -> dict[str, str]:
    """The groups one row belongs to, for an error gallery: race, age (value and bin), attributes set."""
    out = {}
    if "race" in attributes and attributes["race"][row] >= 0:
        out["race"] = UTKFACE_RACES.get(int(attributes["race"][row]), str(attributes["race"][row]))
    if "age" in attributes and attributes["age"][row] >= 0:
        age = int(attributes["age"][row])
        out["age"] = f"{age} ({AGE_LABELS[int(bin_ages(np.array([age]))[0])]})"
    present = [name for name in sorted(attributes) if name not in ("age", "race", *NOT_GROUPS)
               and set(_levels(np.asarray(attributes[name])).tolist()) <= {0, 1} and attributes[name][row] == 1]
    if present:
        out["attributes"] = ", ".join(present)
    return out


def _levels(values: np.ndarray) -> np.ndarray:
    """The distinct known (non-negative) values."""
    return np.unique(values[values >= 0])
