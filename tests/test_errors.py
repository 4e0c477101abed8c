"""The error rows of one scored set (classify/errors.py), most confident first."""
from types import SimpleNamespace

import numpy as np

from classify.errors import wrong_rows


def test_wrong_rows_most_confident_first():
    model = SimpleNamespace(threshold=0.5, p_male=lambda x: x)
    store = SimpleNamespace(ids=np.array(["a", "b", "c", "d"]), attributes={"race": np.array([0, 1, 2, 3])})
    part = SimpleNamespace(index=np.arange(4), gender=np.array([0, 1, 0, 1]), x=np.array([0.9, 0.2, 0.6, 0.8]))
    rows = wrong_rows(model, store, part, np.array(["/a", "/b", "/c", "/d"]), "set", {"b": "doubted"})
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0] == {"dataset": "set", "id": "a", "path": "/a", "p_male": 0.9, "true": "female",
                       "predicted": "male", "groups": {"race": "White"}, "label_check": ""}
    assert rows[1]["label_check"] == "doubted"
