"""The error rows of one scored set (classify/errors.py), most confident first."""
import numpy as np

from classify.errors import error_rows


def test_error_rows_most_confident_first():
    rows = error_rows(np.array(["a", "b", "c", "d"]), np.array(["/a", "/b", "/c", "/d"]),
                      np.array([0, 1, 0, 1]), np.array([0.9, 0.2, 0.6, 0.8]),
                      attributes={"race": np.array([0, 1, 2, 3])})
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0] == {"id": "a", "path": "/a", "p_male": 0.9, "true": "female", "predicted": "male",
                       "groups": {"race": "White"}}
