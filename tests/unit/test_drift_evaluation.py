"""Detection quality measured: the metric definitions, the streams, the evaluation and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftloop.cli import main
from driftloop.services.monitoring import drift
from driftloop.services.monitoring.evaluation import (
    BASELINE,
    DEFAULT_DETECTORS,
    INCIDENT,
    STREAMS,
    RunScore,
    StreamParams,
    aggregate,
    alerts_of,
    always_alerts,
    compare,
    default_drift_points,
    evaluate,
    evaluate_all,
    f1_score,
    format_table,
    incident_alerts,
    make_stream,
    score_run,
)
from driftloop.shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# --- the metric definitions on hand-made alert lists ------------------------------------------


def test_score_run_small_example() -> None:
    # windows: [100, 150) and [200, 250)
    r = score_run([10, 105, 120, 160, 230, 299], [100, 200], n=300, tolerance=50)
    assert r == RunScore(events=300, drifts=2, delays=(5, 30), missed=0, false_alarms=3, repeat_alerts=1)


def test_alert_on_the_drift_point_has_delay_zero_and_one_before_is_a_false_alarm() -> None:
    assert score_run([100], [100], n=300, tolerance=50).delays == (0,)
    r = score_run([99], [100], n=300, tolerance=50)
    assert (r.delays, r.missed, r.false_alarms) == ((), 1, 1)


def test_tolerance_edges() -> None:
    inside = score_run([149], [100], n=300, tolerance=50)
    assert (inside.delays, inside.missed, inside.false_alarms) == ((49,), 0, 0)
    outside = score_run([150], [100], n=300, tolerance=50)
    assert (outside.delays, outside.missed, outside.false_alarms) == ((), 1, 1)


def test_window_is_cut_short_by_the_next_drift_point() -> None:
    # drift 0's window is [100, 120), not [100, 150): the alert at 125 detects drift 1
    r = score_run([125], [100, 120], n=300, tolerance=50)
    assert (r.delays, r.missed, r.false_alarms) == ((5,), 1, 0)


def test_window_is_cut_short_by_the_end_of_the_stream() -> None:
    r = score_run([299], [280], n=300, tolerance=50)
    assert r.delays == (19,)


def test_no_alerts_misses_everything_and_no_drift_points_makes_every_alert_false() -> None:
    assert score_run([], [100, 200], n=300, tolerance=50) == RunScore(300, 2, (), 2, 0, 0)
    assert score_run([0, 5, 299], [], n=300, tolerance=50) == RunScore(300, 0, (), 0, 3, 0)


def test_score_run_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="outside the stream"):
        score_run([300], [100], n=300, tolerance=50)
    with pytest.raises(ConfigError, match="tolerance"):
        score_run([], [100], n=300, tolerance=0)
    for points in ([200, 100], [100, 100], [0], [300]):
        with pytest.raises(ConfigError, match="drift points"):
            score_run([], points, n=300, tolerance=50)


def test_aggregate_pools_delays_and_normalises_false_alarms() -> None:
    runs = [RunScore(1000, 2, (10, 30), 0, 1, 2), RunScore(1000, 2, (50,), 1, 0, 0)]
    s = aggregate("adwin", "error_rate", runs, tolerance=100, cooldown=0)
    assert (s.runs, s.events, s.drifts, s.detected, s.missed) == (2, 2000, 4, 3, 1)
    assert s.mean_delay == pytest.approx(30.0)
    assert (s.median_delay, s.max_delay) == (30.0, 50)
    assert s.false_alarms == 1 and s.false_alarms_per_10k == pytest.approx(5.0)
    assert s.repeat_alerts == 2
    # TP 3, FP 1, FN 1
    assert (s.precision, s.recall, s.f1) == pytest.approx((3 / 4, 3 / 4, 3 / 4))
    nothing = aggregate("adwin", "error_rate", [RunScore(1000, 2, (), 2, 0, 0)], tolerance=100, cooldown=0)
    assert nothing.mean_delay is None and nothing.max_delay is None and nothing.false_alarms_per_10k == 0.0
    assert "-" in format_table([nothing])


# --- precision, recall and F1 -----------------------------------------------------------------


def test_f1_from_a_hand_made_alert_list() -> None:
    # windows [100, 150) and [200, 250): 120 detects the first drift, 10 is a false alarm,
    # 130 repeats (neither), the second drift is missed
    s = aggregate("adwin", "error_rate", [score_run([10, 120, 130], [100, 200], n=300, tolerance=50)], 50, 0)
    assert (s.detected, s.false_alarms, s.missed, s.repeat_alerts) == (1, 1, 1, 1)
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)
    # TP 2, FP 2, FN 0: the harmonic mean of 1/2 and 1, not their arithmetic mean
    t = aggregate("adwin", "error_rate", [score_run([10, 105, 160, 210], [100, 200], n=300, tolerance=50)], 50, 0)
    assert (t.precision, t.recall) == (0.5, 1.0)
    assert t.f1 == pytest.approx(2 / 3)


def test_f1_is_zero_without_a_detection() -> None:
    assert f1_score(0, 0, 2) == (0.0, 0.0, 0.0)
    only_false = aggregate("adwin", "error_rate", [score_run([10, 160], [100, 200], n=300, tolerance=50)], 50, 0)
    assert (only_false.detected, only_false.false_alarms, only_false.f1) == (0, 2, 0.0)
    silent = aggregate("adwin", "error_rate", [score_run([], [100, 200], n=300, tolerance=50)], 50, 0)
    assert (silent.precision, silent.recall, silent.f1) == (0.0, 0.0, 0.0)


def test_f1_over_runs_comes_from_the_summed_counts() -> None:
    perfect = score_run([100], [100], n=300, tolerance=50)  # TP 1: F1 1 alone
    silent = score_run([], [100], n=300, tolerance=50)  # FN 1: F1 0 alone
    s = aggregate("adwin", "error_rate", [perfect, silent], tolerance=50, cooldown=0)
    # summed TP 1, FP 0, FN 1: precision 1, recall 1/2, F1 2/3 (the mean of per-run F1s would be 1/2)
    assert (s.precision, s.recall) == (1.0, 0.5)
    assert s.f1 == pytest.approx(2 / 3)


def test_the_table_compares_each_row_with_the_always_baseline() -> None:
    always = aggregate(BASELINE, "error_rate", [score_run([10, 100, 160, 200], [100, 200], 300, 50)], 50, 0)
    good = aggregate("adwin", "error_rate", [score_run([100, 200], [100, 200], 300, 50)], 50, 0)
    bad = aggregate("ddm", "error_rate", [score_run([10], [100, 200], 300, 50)], 50, 0)
    assert always.f1 == pytest.approx(2 / 3) and (good.f1, bad.f1) == (1.0, 0.0)
    table = format_table([good, bad, always]).splitlines()
    assert "F1 - always" in table[0]
    assert "1.000" in table[2] and "+0.333" in table[2]
    assert "0.000" in table[3] and "-0.667" in table[3]
    assert table[4].split()[-2:] == ["-", "1"]  # no difference of the baseline with itself
    assert "F1 - always" in format_table([good]) and format_table([good]).splitlines()[2].split()[-2:] == ["-", "1"]
    c = compare([good, bad, always])["error_rate"]
    assert c == {
        "best_detector": "adwin",
        "best_f1": 1.0,
        "incident_f1": None,
        "always_f1": pytest.approx(2 / 3),
        "beat_always": ["adwin"],
    }


# --- stub detectors: the arithmetic through SubjectDetectors and the Debouncer -----------------


class _Stub:
    name = "Stub"
    statistic = 0.0
    threshold = 1.0
    window_size = 0

    def __init__(self, fires: bool) -> None:
        self.fires = fires

    def update(self, x: float) -> bool:
        return self.fires


def test_a_detector_that_never_fires_misses_every_drift_without_false_alarms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(drift.DETECTORS, "never", lambda seed: _Stub(False))
    s = evaluate("never", "mean_shift", seeds=3, n=2000)
    assert (s.runs, s.events, s.drifts, s.detected, s.missed) == (3, 6000, 9, 0, 9)
    assert (s.false_alarms, s.false_alarms_per_10k, s.mean_delay) == (0, 0.0, None)


def test_debouncing_is_part_of_what_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(drift.DETECTORS, "every", lambda seed: _Stub(True))
    # fires on every event; the cooldown lets alerts through at 0, 300, 600, ..., 1800
    s = evaluate("every", "error_rate", seeds=[7], n=2000, drift_points=[500, 1000, 1500], tolerance=1000, cooldown=300)
    # 0, 300: before the first point; 600 detects 500; 900 repeats; 1200 detects 1000; 1500 detects 1500; 1800 repeats
    assert (s.missed, s.false_alarms, s.repeat_alerts) == (0, 2, 2)
    assert s.mean_delay == pytest.approx((100 + 200 + 0) / 3)
    undebounced = evaluate("every", "error_rate", seeds=[7], n=2000, drift_points=[500, 1000, 1500], cooldown=0)
    assert undebounced.false_alarms == 500 and undebounced.mean_delay == 0.0


# --- the always baseline and the incident row -------------------------------------------------


def test_the_always_baseline_alerts_every_cooldown_events() -> None:
    # Debouncer: an alert at observation k swallows the subject's detections while fewer than
    # `cooldown` observations separate them from k, so the next alert is at k + cooldown
    assert always_alerts(1000, 300) == [0, 300, 600, 900]
    assert always_alerts(10, 4) == [0, 4, 8]
    assert always_alerts(5, 0) == [0, 1, 2, 3, 4]  # no cooldown: every event


def test_the_always_baseline_row_is_scored_like_a_detector() -> None:
    scores = evaluate_all(["adwin"], ["error_rate", "mean_shift"], seeds=[1, 2], n=2000, drift_points=[500, 1000, 1500])
    base = [s for s in scores if s.detector == BASELINE]
    assert [s.stream for s in base] == ["error_rate", "mean_shift"]
    # alerts at 0, 300, ..., 1800 per run: 0 and 300 false alarms, 600, 1200 and 1500 detect,
    # 900 and 1800 repeat; TP 6, FP 4, FN 0 over the two runs
    for s in base:
        assert (s.detected, s.false_alarms, s.missed, s.repeat_alerts) == (6, 4, 0, 4)
        assert (s.precision, s.recall) == (0.6, 1.0) and s.f1 == pytest.approx(0.75)
    assert "always" not in drift.DETECTORS  # the service cannot be configured with it


class _FiresAt:
    """Fires on its n-th updates (0-based) in ``at``."""

    statistic = 0.0
    threshold = 1.0
    window_size = 0

    def __init__(self, name: str, at: set[int]) -> None:
        self.name = name
        self.at = at
        self.n = -1

    def update(self, x: float) -> bool:
        self.n += 1
        return self.n in self.at


@pytest.fixture
def two_stubs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detector ``a`` fires at event 100, ``b`` at 150 and 990."""
    monkeypatch.setitem(drift.DETECTORS, "a", lambda seed: _FiresAt("A", {100}))
    monkeypatch.setitem(drift.DETECTORS, "b", lambda seed: _FiresAt("B", {150, 990}))


@pytest.mark.usefixtures("two_stubs")
def test_detections_within_the_window_are_one_incident() -> None:
    values = np.zeros(1000)
    assert alerts_of("a", values, 1, 300, binary=True) == [100]
    assert alerts_of("b", values, 1, 300, binary=True) == [150, 990]
    # on the error stream a concept detection raises its incident at once; b's 150 joins it
    assert incident_alerts(["a", "b"], values, 1, 300, 500, binary=True) == [100, 990]
    # on a numeric stream an input incident waits for its window: 100 + 500; b's 990 is still
    # open when the stream ends, so it is raised at the last event
    assert incident_alerts(["a", "b"], values, 1, 300, 500, binary=False) == [600, 999]
    # a window shorter than the 50 events between them, or 0, keeps them apart
    assert incident_alerts(["a", "b"], values, 1, 300, 30, binary=True) == [100, 150, 990]
    assert incident_alerts(["a", "b"], values, 1, 300, 0, binary=False) == [100, 150, 990]


@pytest.mark.usefixtures("two_stubs")
def test_the_incident_row_scores_the_merged_alerts() -> None:
    scores = evaluate_all(["a", "b"], ["error_rate"], seeds=[3], n=1000, drift_points=[100], tolerance=500)
    by = {s.detector: s for s in scores}
    assert list(by) == ["a", "b", INCIDENT, BASELINE]
    # a detects at 100; b detects at 150 and 990 is a false alarm; merged: 100 detects, 990 false
    assert (by["a"].detected, by["a"].false_alarms, by["a"].f1) == (1, 0, 1.0)
    assert (by["b"].detected, by["b"].false_alarms) == (1, 1)
    inc = by[INCIDENT]
    assert (inc.detected, inc.false_alarms, inc.repeat_alerts, inc.mean_delay) == (1, 1, 0, 0.0)
    alone = evaluate_all(
        ["a", "b"], ["error_rate"], seeds=[3], n=1000, drift_points=[100], tolerance=500, incident_window=0
    )
    apart = {s.detector: s for s in alone}[INCIDENT]
    assert (apart.detected, apart.false_alarms, apart.repeat_alerts) == (1, 1, 1)  # 150: a second alert
    rows = {
        s.detector for s in evaluate_all(["a"], ["error_rate"], seeds=[3], n=1000, baseline=False, incident_window=None)
    }
    assert rows == {"a"}
    with pytest.raises(ConfigError, match="incident window"):
        evaluate_all(["a"], ["error_rate"], seeds=[3], n=1000, incident_window=-1)


def test_the_incident_row_merges_the_detectors_the_stream_runs() -> None:
    # on a numeric stream the binary-only ddm does not run: the incident row equals adwin's
    # own detections merged, with ddm or without it in the list
    with_ddm = evaluate_all(["adwin", "ddm"], ["mean_shift"], seeds=[1], n=3000)
    adwin_only = evaluate_all(["adwin"], ["mean_shift"], seeds=[1], n=3000)
    assert [s.detector for s in with_ddm] == ["adwin", INCIDENT, BASELINE]
    assert with_ddm == adwin_only


# --- streams and real detectors ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(STREAMS))
def test_streams_are_seeded_and_have_the_right_shape(kind: str) -> None:
    points = default_drift_points(2000)
    a = make_stream(kind, 2000, points, 3, StreamParams())
    assert a.shape == (2000,) and np.isfinite(a).all()
    assert np.array_equal(a, make_stream(kind, 2000, points, 3, StreamParams()))
    assert not np.array_equal(a, make_stream(kind, 2000, points, 4, StreamParams()))
    if STREAMS[kind].binary:
        assert set(np.unique(a)) <= {0.0, 1.0}


def test_streams_change_where_they_say() -> None:
    n, points = 40_000, (10_000, 20_000, 30_000)
    m = make_stream("mean_shift", n, points, 1, StreamParams(shift=2.0))
    assert [round(float(m[a:b].mean())) for a, b in [(0, 10_000), (10_000, 20_000), (20_000, 30_000)]] == [0, 2, 0]
    v = make_stream("variance", n, points, 1, StreamParams(variance_factor=3.0))
    assert [round(float(v[a:b].std())) for a, b in [(0, 10_000), (10_000, 20_000)]] == [1, 3]
    e = make_stream("error_rate", n, points, 1, StreamParams())
    assert [round(float(e[a : a + 10_000].mean()), 1) for a in (0, *points)] == [0.1, 0.3, 0.5, 0.7]
    with pytest.raises(ConfigError, match="leave"):
        make_stream("error_rate", n, points, 1, StreamParams(error_jump=0.4))


def test_default_drift_points() -> None:
    assert default_drift_points(10_000) == (2500, 5000, 7500)


def test_same_seeds_give_the_same_scores() -> None:
    a = evaluate_all(["adwin", "ddm", "psi"], ["error_rate", "mean_shift"], seeds=[1, 2], n=3000)
    b = evaluate_all(["adwin", "ddm", "psi"], ["error_rate", "mean_shift"], seeds=[1, 2], n=3000)
    assert a == b  # DetectorScore equality leaves the timing out


def test_adwin_detects_every_error_rate_drift_quickly_and_rarely_raises_false_alarms() -> None:
    s = evaluate("adwin", "error_rate", seeds=10, n=10_000)
    assert s.drifts == 30 and s.missed == 0
    assert s.mean_delay is not None and math.isfinite(s.mean_delay) and s.mean_delay < 500
    assert s.false_alarms_per_10k <= 1.0


def test_binary_only_detectors_run_on_error_streams_only() -> None:
    with pytest.raises(ConfigError, match="0/1 error stream"):
        evaluate("ddm", "mean_shift", seeds=1, n=1000)
    pairs = {(s.detector, s.stream) for s in evaluate_all(["adwin", "ddm"], None, seeds=1, n=1000)}
    rows = {("adwin", k) for k in STREAMS} | {("ddm", k) for k in STREAMS if STREAMS[k].binary}
    assert pairs == rows | {(r, k) for r in (INCIDENT, BASELINE) for k in STREAMS}


def test_evaluate_rejects_bad_requests() -> None:
    with pytest.raises(ConfigError, match="unknown drift detector 'nope'"):
        evaluate("nope", "mean_shift", seeds=1, n=1000)
    with pytest.raises(ConfigError, match="unknown stream kind"):
        evaluate("adwin", "nope", seeds=1, n=1000)
    with pytest.raises(ConfigError, match="drift points"):
        evaluate("adwin", "mean_shift", seeds=1, n=1000, drift_points=[1000])
    with pytest.raises(ConfigError, match="seed"):
        evaluate("adwin", "mean_shift", seeds=[], n=1000)


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_writes_every_detector_stream_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    every = ",".join(drift.DETECTORS)
    rc = main(["evaluate-drift", "--seeds", "1", "--events", "400", "--detectors", every, "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "drift_evaluation.json").read_text())
    pairs = {(s["detector"], s["stream"]) for s in doc["scores"]}
    binary = {k: STREAMS[k].binary for k in STREAMS}
    expected = {
        (d, k)
        for d in drift.DETECTORS
        for k in STREAMS
        if (binary[k] or d not in drift.BINARY_ONLY) and not (binary[k] and d in drift.NUMERIC_ONLY)
    }
    assert pairs == expected | {(r, k) for r in (INCIDENT, BASELINE) for k in STREAMS}
    assert all(s["events"] == 400 and s["runs"] == 1 and s["drifts"] == 3 for s in doc["scores"])
    assert all(0.0 <= s[m] <= 1.0 for s in doc["scores"] for m in ("precision", "recall", "f1"))
    assert doc["drift_points"] == [100, 200, 300] and doc["tolerance"] == 1000 and doc["incident_window"] == 500
    assert set(doc["comparison"]) == set(STREAMS)
    assert all(c["always_f1"] is not None and c["incident_f1"] is not None for c in doc["comparison"].values())
    out = capsys.readouterr().out
    assert "false alarms /10k" in out and "missed / drifts" in out and "F1 - always" in out
    assert sum(line.startswith(f"{k}: F1 best ") for line in out.splitlines() for k in STREAMS) == len(STREAMS)


def test_cli_default_detectors_leave_out_kswin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate-drift", "--seeds", "2", "--events", "400", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "drift_evaluation.json").read_text())
    assert {s["detector"] for s in doc["scores"]} == {*DEFAULT_DETECTORS, INCIDENT, BASELINE}
    assert "kswin" not in DEFAULT_DETECTORS
    assert all(s["events"] == 800 for s in doc["scores"])
    assert "left out (slow): kswin" in capsys.readouterr().out


def test_cli_unknown_detector_is_one_line_and_non_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "evaluate-drift", "--detectors", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("driftloop: error: unknown drift detector 'nope'; choose from adwin, ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "0 must be at least 1"),
        (["--events", "ten"], "'ten' is not an integer"),
        (["--cooldown", "-1"], "must not be negative"),
        (["--incident-window", "-1"], "-1 must not be negative"),
        (["--incident-window", "half"], "'half' is not an integer"),
    ],
)
def test_cli_bad_numbers_are_one_line_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate-drift", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_too_few_events_for_the_drift_points(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["evaluate-drift", "--events", "3", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("driftloop: error: drift points") and err.count("\n") == 1


def test_cli_incident_window_reaches_the_incident_row(tmp_path: Path) -> None:
    args = ["evaluate-drift", "--seeds", "2", "--events", "2000", "--detectors", "adwin,page_hinkley"]
    scores = {}
    for window in ("0", "100000"):
        assert main([*args, "--incident-window", window, "--out", str(tmp_path / window)]) == 0
        doc = json.loads((tmp_path / window / "drift_evaluation.json").read_text())
        assert doc["incident_window"] == int(window)
        scores[window] = {s["stream"]: s for s in doc["scores"] if s["detector"] == INCIDENT}
        assert set(scores[window]) == set(STREAMS)
        assert all(0.0 <= s["f1"] <= 1.0 for s in scores[window].values())
    # each detection its own alert, against one incident for the whole run (raised on the error
    # streams at the first detection, flushed at the last event on the numeric ones)
    alerts = {
        w: {k: s["detected"] + s["false_alarms"] + s["repeat_alerts"] for k, s in v.items()} for w, v in scores.items()
    }
    assert all(alerts["100000"][k] <= 2 for k in STREAMS)  # one per run
    assert sum(alerts["0"].values()) > sum(alerts["100000"].values())
