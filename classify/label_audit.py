"""Gender labels in doubt: a check of the data, not of the heads. Two checks, both only flag.

CelebA labels ``Male`` per image, and some images carry the other label from most images of the same
person; most of the recommended head's CelebA test errors are such images (docs/findings.md). A user
should see that beside the error, not discover it later. No label or metric is ever changed: the flags go
into the error lists (``label_check``), the leaderboard counts them, and ``python -m classify audit-labels``
lists every flagged row of a store (`audit_store`).

`label_doubts`: at least `MIN_OTHERS` other images of the row's identity (whole store) and at least
`MIN_SHARE` of them labelled the other sex. For datasets without identities (UTKFace), `cross_val_doubts`
("confident learning", Northcutt et al., JAIR 2021, in its simplest form): a standardised logistic
regression fitted on four fifths of the store's rows predicts the fifth, five times over; a row is flagged
when its own label gets p < `MAX_P_LABEL`. Folds are grouped by identity when the store records it, so that
a person's other images do not vouch for them (docs/findings.md).
"""
from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict, cross_val_score

from classify.balance import standardised_logreg
from classify.groups import MISSING  # how a store marks an identity it does not know
from features import atomic
from features.dataset import SPLITS
from features.tables import csv_cell

MIN_OTHERS = 5     # other images of the identity needed before its majority says anything
MIN_SHARE = 0.8    # share of them that must carry the other label
FOLDS = 5
MAX_P_LABEL = 0.05            # out-of-fold probability of a row's own label under which it is flagged
CROSS_VAL_CS = (1e-3, 1e-2, 1e-1, 1.0)  # the check's inverse regularisation strengths, chosen by log loss

log = logging.getLogger(__name__)


def label_doubts(ids: np.ndarray, gender: np.ndarray, identity: np.ndarray | None) -> dict[str, str]:
    """{image id: why its label is doubtful} by the identity check (module docstring); empty without identities.
    Vectorised: full CelebA (202,599 rows, 10,177 identities) takes well under a second."""
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
    """The leaderboard's lines on the recommended run's errors with a label in doubt (test, each eval store)."""
    lines = []
    doubted, total = count_doubted(analysis["errors"])
    if doubted:
        lines.append(f"Label check: {doubted} of the recommended run's {total} {analysis['split']} errors are images "
                     f"whose gender label disagrees with at least {MIN_SHARE:.0%} of the other images of the same "
                     "identity: possible label errors, listed with `label_check` in errors.csv. Accuracy counts them "
                     "as errors.")
    for label, part in analysis.get("cross_dataset", {}).items():
        doubted, total = count_doubted(part["errors"])
        if doubted:
            lines.append(f"Label check on {label} ({part['rows']} rows): {doubted} of the recommended run's {total} "
                         f"errors there are images whose label a head cross-validated on {label}'s own labels "
                         f"contradicts (p < {MAX_P_LABEL:g}), or their identity's other images do: possible label "
                         "errors, in errors.csv. Accuracy counts them as errors.")
    return "\n".join(lines)


def count_doubted(errors: list[dict]) -> tuple[int, int]:
    """(errors whose label is in doubt, errors)."""
    return sum(1 for row in errors if row.get("label_check")), len(errors)


def cross_val_doubts(ids: np.ndarray, x: np.ndarray, gender: np.ndarray, identity: np.ndarray | None = None, *,
                     seed: int = 0, features: str = "the features") -> dict[str, str]:
    """{image id: why its label is doubtful} by the cross-validated check (module docstring); ``identity`` groups
    the folds (`MISSING`: alone). C is chosen on the same folds by log loss, then each row predicted out of fold."""
    gender = np.asarray(gender).astype(np.int64)
    counts = np.bincount(gender, minlength=2)
    if counts.min() < FOLDS:
        raise LabelAuditError(f"the cross-validated label check needs at least {FOLDS} rows of each sex, these "
                              f"rows have {counts[1]} male and {counts[0]} female")
    try:
        folds = _folds(gender, identity, seed)
        scores = [np.mean(cross_val_score(standardised_logreg(c), x, gender, cv=folds, scoring="neg_log_loss",
                                          error_score="raise")) for c in CROSS_VAL_CS]
        chosen = CROSS_VAL_CS[int(np.argmax(scores))]
        p_male = cross_val_predict(standardised_logreg(chosen), x, gender, cv=folds, method="predict_proba")[:, 1]
    except ValueError as error:  # fewer identities than folds, or a fold whose train rows are one sex
        raise LabelAuditError(f"the cross-validated label check cannot split these rows into {FOLDS} folds "
                              f"with both sexes on the train side: {error}") from None
    p_label = np.where(gender == 1, p_male, 1 - p_male)
    return {str(ids[i]): f"a head fitted on the store's other folds ({features}, {FOLDS}-fold, C={chosen:g}) gives "
            f"this label p = {p_label[i]:.3f}" for i in np.flatnonzero(p_label < MAX_P_LABEL)}


class LabelAuditError(ValueError):
    """The rows cannot be checked (too few of one sex for the folds)."""


def _folds(gender: np.ndarray, identity: np.ndarray | None, seed: int) -> list:
    if identity is None:
        return list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(gender, gender))
    identity = np.asarray(identity).astype(np.int64)
    groups = np.where(identity == MISSING, -2 - np.arange(len(identity)), identity)  # unknown: alone
    return list(GroupKFold(FOLDS, shuffle=True, random_state=seed).split(gender, gender, groups))


def store_doubts(store, backbones: Sequence[str] = (), *, seed: int = 0,
                 required: bool = True) -> dict[str, dict[str, str]]:
    """{"identity": {id: why}, "cross_val": {id: why}} of a `FeatureStore`, the second on the valid rows of
    ``backbones`` when given; rows it cannot check: a LabelAuditError, or (``required=False``) a warning."""
    identity = store.attributes.get("identity")
    found = {"identity": label_doubts(store.ids, store.gender, identity), "cross_val": {}}
    if backbones:
        part = store.read(list(backbones))
        try:
            found["cross_val"] = cross_val_doubts(store.ids[part.index], part.x, part.gender,
                                                  None if identity is None else np.asarray(identity)[part.index],
                                                  seed=seed, features="+".join(backbones))
        except LabelAuditError as error:
            if required:
                raise
            log.warning("%s: no cross-validated label check (%s)", store.path, error)
    return found


def merged(doubts: dict[str, dict[str, str]]) -> dict[str, str]:
    """{id: every reason its label is in doubt, joined}."""
    checks = (doubts["identity"], doubts["cross_val"])
    return {image: "; ".join(check[image] for check in checks if image in check)
            for image in dict.fromkeys([*checks[0], *checks[1]])}


def audit_store(store, doubts: dict[str, dict[str, str]]) -> list[dict]:
    """Every row of a `FeatureStore` with a label in doubt (``doubts`` from `store_doubts`), in id order."""
    position = {str(image): row for row, image in enumerate(store.ids)}
    return [{"id": image, "split": SPLITS[int(store.split[position[image]])],
             "label": "male" if store.gender[position[image]] == 1 else "female",
             "identity_check": doubts["identity"].get(image, ""), "cross_val_check": doubts["cross_val"].get(image, ""),
             "label_check": why} for image, why in sorted(merged(doubts).items())]


def audit_text(store, rows: list[dict], backbones: Sequence[str] = ()) -> str:
    """What ``audit-labels`` prints: a summary line per check, then one line per doubted row."""
    if "identity" in store.attributes:
        n = sum(1 for row in rows if row["identity_check"])
        lines = [f"{store.path}: {n} of {store.n_rows} labels disagree with at least {MIN_SHARE:.0%} of the "
                 f"other images (>= {MIN_OTHERS}) of the same identity"]
    else:
        lines = [f"{store.path}: the store records no identity, so no label can be checked against its identity"]
    if backbones:
        n = sum(1 for row in rows if row["cross_val_check"])
        lines.append(f"{store.path}: {n} labels get p < {MAX_P_LABEL:g} from a head fitted on the store's other "
                     f"folds ({'+'.join(backbones)}, {FOLDS}-fold cross-validation)")
    elif "identity" not in store.attributes:
        lines.append("give --backbones B to check the labels against a cross-validated head on B's features")
    lines += [f"{row['split']:5}  {row['id']}  labelled {row['label']}: {row['label_check']}" for row in rows]
    return "\n".join(lines) + "\n"


def write_audit(rows: list[dict], path: Path) -> None:
    """The doubted rows as CSV, atomically; formula-like cells quoted (`features.tables.csv_cell`)."""
    with atomic.atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "split", "label", "identity_check", "cross_val_check"])
        writer.writeheader()
        writer.writerows({key: csv_cell(row[key]) for key in writer.fieldnames} for row in rows)
