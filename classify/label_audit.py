"""Gender labels that disagree with the rest of their identity: a check of the data, not of the heads.

CelebA labels ``Male`` per image, and some images carry the other label from most images of the same
person. In the shared 6,000-image subset, 40 images (of 23 of its 200 identities) disagree with the
majority of their identity's other images. Six of the recommended head's seven CelebA test errors are
such images, and the photos show the sex of the majority (PERFORMANCE.md). A test error on one of them
is more likely a label error than a head error, and a user should see that beside the error, not
discover it later.

`label_doubts` flags a row when at least `MIN_OTHERS` other images of its identity exist (in the whole
store, every split) and at least `MIN_SHARE` of them carry the other label. It never changes a label
or a metric: the flag goes into the error list (``errors.json``/``errors.csv``, ``label_check``) and
the leaderboard counts the flagged errors. ``python -m classify audit-labels --store S`` lists every
flagged row of a store, all splits (`audit_store`), for a user who wants to look at or fix the labels.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

MIN_OTHERS = 5     # other images of the identity needed before its majority says anything
MIN_SHARE = 0.8    # share of them that must carry the other label
MISSING = -1       # how a store marks an identity it does not know


def label_doubts(ids: np.ndarray, gender: np.ndarray, identity: np.ndarray | None) -> dict[str, str]:
    """{image id: why its label is doubtful} for the rows whose identity's other images mostly carry the
    other label; empty when the store records no identity. Vectorised: full CelebA (202,599 rows, 10,177
    identities) takes well under a second."""
    if identity is None:
        return {}
    gender, identity = np.asarray(gender), np.asarray(identity)
    rows = np.flatnonzero(identity != MISSING)
    people, person_of = np.unique(identity[rows], return_inverse=True)
    is_male = gender[rows] == 1
    males = np.bincount(person_of, weights=is_male)[person_of]
    others = np.bincount(person_of)[person_of] - 1
    # the other images labelled the other sex: women beside a man, men beside a woman
    other_label = np.where(is_male, others - (males - 1), males).astype(int)
    flagged = np.flatnonzero((others >= MIN_OTHERS) & (other_label >= MIN_SHARE * others))
    return {str(ids[rows[i]]): f"{other_label[i]} of the {others[i]} other images of identity "
            f"{people[person_of[i]]} are labelled {'female' if is_male[i] else 'male'}" for i in flagged}


def doubt_note(analysis: dict) -> str:
    """The leaderboard's line about the recommended run's test errors whose labels are in doubt ("" if none)."""
    doubted = sum(1 for row in analysis["errors"] if row.get("label_check"))
    if not doubted:
        return ""
    total = len(analysis["errors"])
    return (f"Label check: {doubted} of the recommended run's {total} {analysis['split']} errors are images whose "
            f"gender label disagrees with at least {MIN_SHARE:.0%} of the other images of the same identity: "
            "possible label errors, listed with `label_check` in errors.csv. Accuracy counts them as errors.")


def audit_store(store) -> list[dict]:
    """Every row of a `FeatureStore` whose label is in doubt: {"id", "split", "label", "label_check"}."""
    from features.dataset import SPLITS

    doubts = label_doubts(store.ids, store.gender, store.attributes.get("identity"))
    position = {str(image): row for row, image in enumerate(store.ids)}
    return [{"id": image, "split": SPLITS[int(store.split[position[image]])],
             "label": "male" if store.gender[position[image]] == 1 else "female", "label_check": why}
            for image, why in sorted(doubts.items())]


def audit_text(store, rows: list[dict]) -> str:
    """What ``audit-labels`` prints: a summary line, then one line per doubted row."""
    if "identity" not in store.attributes:
        return f"{store.path}: the store records no identity, so no label can be checked against its identity\n"
    lines = [f"{store.path}: {len(rows)} of {store.n_rows} labels disagree with at least {MIN_SHARE:.0%} of the "
             f"other images (>= {MIN_OTHERS}) of the same identity"]
    lines += [f"{row['split']:5}  {row['id']}  labelled {row['label']}: {row['label_check']}" for row in rows]
    return "\n".join(lines) + "\n"


def write_audit(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "split", "label", "label_check"])
        writer.writeheader()
        writer.writerows(rows)
