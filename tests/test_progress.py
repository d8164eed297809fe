"""Progress reporting: a live bar on a terminal, one line per stage in a log, nothing when quiet."""
import io
import re

import pytest

import common.progress as progress
from common.progress import LineProgress, progress_bar, track


@pytest.fixture
def log_stderr(monkeypatch):
    """A function making stderr a log file (not a TTY) and returning it. Called in the test
    body: pytest's own capture replaces ``sys.stderr`` again between setup and call."""
    def make():
        stream = io.StringIO()
        monkeypatch.setattr(progress.sys, "stderr", stream)
        assert not progress.stderr_is_terminal()
        return stream
    return make


def test_in_a_log_a_stage_writes_one_line_when_it_ends(log_stderr):
    log = log_stderr()
    with progress_bar(total=5, desc="hashing files", unit="file") as bar:
        for _ in range(5):
            bar.update(1)
            assert log.getvalue() == ""  # nothing while the stage runs
    text = log.getvalue()
    assert "\r" not in text
    assert text.count("\n") == 1 and text.endswith("\n")
    assert re.fullmatch(r"hashing files: 5/5 file in \d+\.\d s\n", text), text


def test_track_in_a_log_writes_one_line_after_the_items(log_stderr):
    log = log_stderr()
    seen = []
    for item in track(range(3), desc="embedding with toy", unit="file"):
        seen.append(item)
        assert log.getvalue() == ""
    assert seen == [0, 1, 2]
    text = log.getvalue()
    assert "\r" not in text and text.splitlines() == [text.rstrip("\n")]
    assert text.startswith("embedding with toy: 3/3 file in ")


def test_a_stage_that_fails_still_ends_with_its_one_line(log_stderr):
    log = log_stderr()
    with pytest.raises(RuntimeError):
        for item in track([1, 2, 3], desc="analysis", unit="step"):
            if item == 2:
                raise RuntimeError("boom")
    text = log.getvalue()
    assert text.startswith("analysis: 1/3 step in ") and text.count("\n") == 1
    assert "\r" not in text


def test_unknown_total_and_close_twice(log_stderr):
    log = log_stderr()
    bar = progress_bar(desc="downloading x", unit="B")
    bar.update(10)
    bar.update(5)
    bar.close()
    bar.close()
    assert log.getvalue().startswith("downloading x: 15 B in ")
    assert log.getvalue().count("\n") == 1


def test_disabled_writes_nothing_anywhere(log_stderr, monkeypatch, capsys):
    log = log_stderr()
    with progress_bar(total=3, desc="quiet", enabled=False) as bar:
        bar.update(3)
    assert list(track(range(4), desc="quiet too", enabled=False)) == [0, 1, 2, 3]
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)  # even on a terminal
    with progress_bar(total=3, desc="quiet", enabled=False) as bar:
        bar.update(3)
    assert log.getvalue() == ""
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_on_a_terminal_a_tqdm_bar_is_drawn(log_stderr, monkeypatch):
    log = log_stderr()
    from tqdm.auto import tqdm

    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    bar = progress_bar(total=4, desc="embedding", unit="file", file=log, leave=True)
    try:
        assert isinstance(bar, tqdm) and not isinstance(bar, LineProgress)
        bar.update(4)
    finally:
        bar.close()
    assert "embedding" in log.getvalue() and "4/4" in log.getvalue()
    items = track(range(2), desc="t", file=log)
    assert list(items) == [0, 1]


def test_stderr_is_terminal_survives_odd_streams(monkeypatch):
    class Closed:
        def isatty(self):
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(progress.sys, "stderr", Closed())
    assert progress.stderr_is_terminal() is False
    monkeypatch.setattr(progress.sys, "stderr", object())
    assert progress.stderr_is_terminal() is False


def test_a_run_logged_to_a_file_writes_one_line_per_stage(tmp_path, capsys):
    import cli
    import toy_embedders  # noqa: F401  (registers toy-audio / toy-midi)
    from conftest import write_midi, write_wav

    data = tmp_path / "data"
    for i in range(3):
        write_wav(data / "rock" / f"a{i}.wav")
        write_midi(data / "rock" / f"a{i}.mid")
    assert cli.main(["--dataset", str(data), "--embedders", "toy-audio", "toy-midi",
                     "--out", str(tmp_path / "out"), "--emb-dir", str(tmp_path / "emb"),
                     "--no-analysis"]) == 0
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err
    stages = [line.split(":")[0] for line in err.splitlines()]
    assert stages == ["hashing files", "embedding with toy-audio", "exporting toy-audio",
                      "embedding with toy-midi", "exporting toy-midi"], err
