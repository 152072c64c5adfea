"""The HTML report: contents, escaping, no secrets, offline, and a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from poolbench import analyse, load_sweep, render_analysis
from poolbench.analysis.history import exact_history, latency_gaps, read_history, window_span
from poolbench.analysis.synthetic import SECRET, WINDOW_END_S, WINDOW_START_S, make_sweep
from poolbench.report.html import default_report_path

XSS = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXPECTED_CHARTS = {"throughput", "latency", "heatmap", "pool", "errors", "models", "timeseries"}


def render_report(sweep: Path, out: Path | None = None) -> Path:
    """Load, analyse and render a sweep, as `poolbench report` does."""
    return render_analysis(analyse(load_sweep(sweep)), out or default_report_path(sweep))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    return render_report(make_sweep(root), root / "report.html")


def _charts(html: str) -> set[str]:
    return set(re.findall(r'data-chart="([^"]+)"', html))


def test_default_output_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside the results, not in ./reports of wherever the command ran (issue 18)."""
    sweep = make_sweep(tmp_path / "results", history=False)
    monkeypatch.chdir(tmp_path / "results")
    path = render_report(sweep)
    assert path == sweep / "report.html" and path.is_file()
    assert not (tmp_path / "results" / "reports").exists()
    stats = tmp_path / "locust_stats.csv"
    assert default_report_path(stats) == tmp_path / "locust.html"


def test_report_contents(report_html: Path) -> None:
    html = report_html.read_text()
    assert _charts(html) == EXPECTED_CHARTS
    assert html.count('src="data:image/png;base64,') == len(EXPECTED_CHARTS)
    for text in (
        "pool_size=24, max_overflow=0",
        "PASS",
        "Where the seed formula goes wrong",
        "Little&#39;s law",
        "Erlang C",
        "load-generator-bound",
        "p48-o4-s20-u24-q1-r3",
        "git_sha",
        "[slo]",
        "Grey band: the measured window",
        "dots: each repetition; shaded: 95% CI of the mean (t-distribution, n=2-3 per config",
    ):
        assert text in html, text


def test_report_is_offline_and_secret_free(report_html: Path) -> None:
    html = report_html.read_text()
    assert SECRET not in html
    assert "bench:***@" in html  # the redacted DSN is shown
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert "<script" not in html.lower()


def test_spec_and_results_text_is_escaped(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, name=f"x{XSS}-20250101-120000", scenario=XSS, history=False)
    html = render_report(sweep, tmp_path / "xss.html").read_text()
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()


def test_time_series_shade_the_measured_window(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path, pool_sizes=(1, 2), max_overflows=(0,), repetitions=1))
    path = next(iter(sweep.history_paths.values()))
    history = read_history(path)
    # window.jsonl epochs line up with the history's Timestamp column; worker markers are ignored.
    assert window_span(path, history) == pytest.approx((WINDOW_START_S, WINDOW_END_S))
    # The reset's zero percentiles are gaps, not 0 ms.
    p95 = latency_gaps(history["95%"])
    assert (history["95%"] == 0).sum() == 1
    assert p95.isna().sum() == 1 and (p95.dropna() > 0).all()
    # A garbled line is skipped; markers from another run's clock are not drawn.
    window = path.parent / "window.jsonl"
    window.write_text("not json\n" + window.read_text())
    assert window_span(path, history) == pytest.approx((WINDOW_START_S, WINDOW_END_S))
    window.write_text('{"event": "start", "epoch": 1.0}\n{"event": "end", "epoch": 2.0}\n')
    assert window_span(path, history) is None
    # No window.jsonl (plain Locust output, older sweeps): the whole history, said so.
    for run_path in sweep.history_paths.values():
        (run_path.parent / "window.jsonl").unlink(missing_ok=True)
    assert window_span(path, history) is None
    html = render_analysis(analyse(sweep), tmp_path / "nowindow.html").read_text()
    assert "timeseries" in _charts(html)
    assert "No window.jsonl: the whole history is shown" in html


def test_charts_skip_axes_that_were_not_swept(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, pool_sizes=(8,), max_overflows=(0,), users=(4,), history=False)
    html = render_report(sweep, tmp_path / "one.html").read_text()
    assert _charts(html) == {"models"}
    assert "not enough points" in html


def test_extra_axes_get_their_charts(tmp_path: Path) -> None:
    sweep = make_sweep(
        tmp_path, queries=(1, 3), http_limits=(5, 20), max_overflows=(0,), history=False
    )
    analysis = analyse(load_sweep(sweep))
    html = render_analysis(analysis, tmp_path / "axes.html").read_text()
    charts = _charts(html)
    assert {"semaphore", "axis-queries_per_request", "throughput"} <= charts
    assert "heatmap" not in charts  # max_overflow was not swept
    assert "queries_per_request=3" in html  # one models table per workload


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip(
            "chromium is not installed (make test installs it: scripts/install-chromium.sh)"
        )
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = report_html.resolve().as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert _charts(dom) == EXPECTED_CHARTS
    assert "Recommended config" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1400,3000", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1400)
    # Not blank: many distinct colours, and the chart area (below the summary) varies too.
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 200
    chart_band = pixels[700:1400]
    assert chart_band.std() > 0.05


def test_time_series_prefer_the_exact_per_second_series(tmp_path: Path) -> None:

    history = tmp_path / "locust_stats_history.csv"
    history.write_text(
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,99%\n"
        "1000,0,,Aggregated,0,0,0,0,0\n"
        "1002,10,,Aggregated,3,0,40,90,95\n"
        "1004,10,,Aggregated,0,0,0,0,0\n"
    )
    (tmp_path / "timeseries.csv").write_text(
        "epoch_s,requests,failures,p50_ms,p95_ms,p99_ms\n1001,50,1,20,30,35\n1003,60,0,21,31,36\n"
    )
    frame = exact_history(history)
    assert list(frame["Requests/s"]) == [50, 60] and list(frame["95%"]) == [30, 31]
    assert list(frame["t_s"]) == [1.5, 3.5]  # bin middles on Locust's clock
    assert list(frame["User Count"]) == [7.5, 10.0]  # interpolated from Locust's history
    (tmp_path / "timeseries.csv").unlink()
    assert list(exact_history(history)["Requests/s"]) == [0, 3, 0]  # falls back to Locust's
