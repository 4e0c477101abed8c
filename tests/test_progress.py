"""Progress lines when stderr is not a terminal (batch jobs, CI, `| tee`) or the bar is turned off."""
import logging

from extract.pipeline import Progress, duration


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_rows_rate_and_time_left(caplog):
    clock = FakeClock()
    progress = Progress(1000, name="sface", bar=False, every=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="extract.pipeline"):
        for _ in range(25):  # 40 rows every 2 s: 20 images/s
            clock.now += 2
            progress.update(40)
        progress.close()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "sface: 200 of 1000 rows (20%), 20.0 images/s, about 40 s left"
    assert lines[1] == "sface: 400 of 1000 rows (40%), 20.0 images/s, about 30 s left"
    assert len(lines) == 5 and lines[-1] == "sface: 1000 of 1000 rows (100%), 20.0 images/s, done"


def test_a_terminal_bar_logs_no_lines(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    clock = FakeClock()
    progress = Progress(10, name="x", bar=True, every=0, clock=clock)
    with caplog.at_level(logging.INFO, logger="extract.pipeline"):
        clock.now += 1
        progress.update(10)
        progress.close()
    assert not caplog.records


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (4.4, 65, 3 * 3600 + 12 * 60 + 5)] == ["4 s", "1 min 05 s", "3 h 12 min"]
