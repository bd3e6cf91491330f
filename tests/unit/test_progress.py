"""Calibration's long loops report count, rate and ETA on stderr, and nothing under --quiet."""

from __future__ import annotations

import io
import re

import pytest

from calibration.progress import LOG_INTERVAL_S, Progress, is_quiet, note, quiet


def test_progress_reports_count_elapsed_eta_and_rate_in_its_unit():
    out = io.StringIO()
    with Progress(4, "collecting activations (vLLM)", unit="statements", file=out, interval=0) as bar:
        bar.update(2)
        halfway = out.getvalue()
        bar.update(2)
    # "2/4 [00:00<00:00, 1234.56statements/s]": done/total [elapsed<remaining, rate]
    meter = re.compile(r"collecting activations \(vLLM\):.* (\d)/4 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+statements/s\]")
    assert [m.group(1) for m in meter.finditer(halfway)][-1] == "2"
    assert [m.group(1) for m in meter.finditer(out.getvalue())][-1] == "4"
    assert out.getvalue().endswith("\n")  # the finished bar stays on its own line


def test_a_bar_off_a_terminal_redraws_rarely_so_logs_stay_short():
    out = io.StringIO()  # not a terminal
    with Progress(1000, "fitting", unit="fits", file=out) as bar:
        for _ in range(1000):
            bar.update()
    assert LOG_INTERVAL_S >= 10 and out.getvalue().count("/1000") <= 3  # the start, maybe one, the end


def test_quiet_silences_bars_and_notes_and_ends_with_its_block(capsys: pytest.CaptureFixture[str]):
    out = io.StringIO()
    with quiet():
        assert is_quiet()
        with Progress(3, "fitting", file=out, interval=0) as bar:
            bar.update(3)
        note("calibrate", "chose layers 12, 14")
    assert out.getvalue() == "" and capsys.readouterr().err == ""
    assert not is_quiet()
    note("calibrate", "chose layers 12, 14")
    assert capsys.readouterr().err == "calibrate: chose layers 12, 14\n"


def test_quiet_false_leaves_progress_on():
    out = io.StringIO()
    with quiet(False), Progress(1, "fitting", file=out, interval=0) as bar:
        bar.update()
    assert "1/1" in out.getvalue()


@pytest.mark.parametrize("argv", [["calibrate", "--out", "o"], ["evaluate", "--probe", "p", "--statements", "s.csv"],
                                  ["evaluate-qa"], ["calibrate-answers", "--out", "o"],
                                  ["steer", "build", "--out", "o"]])
def test_every_long_command_takes_quiet(argv):
    from guard.__main__ import build_parser

    parser = build_parser()
    assert parser.parse_args(argv).quiet is False and parser.parse_args([*argv, "--quiet"]).quiet is True


def test_calibrate_takes_a_features_folder_for_sets_larger_than_ram():
    from guard.__main__ import build_parser

    args = build_parser().parse_args(["calibrate", "--out", "o", "--features-dir", "/data/feats"])
    assert args.features_dir == "/data/feats"
