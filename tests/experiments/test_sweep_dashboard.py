"""``python -m experiments.sweep_dashboard`` for real: on a finished tiny sweep (one trial finished, one
pruned), its JSON API lists the study and the trials, and headless Chromium renders the trials page.

Everything stays on 127.0.0.1, every wait is bounded, and the server is stopped with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.conftest import TESTS, assert_refused, run_cli
from tests.experiments.test_sweep_pruning import PRUNING

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get_json(url: str, timeout_s: float = 30) -> dict:
    """GET ``url`` until the server answers (bounded), then its JSON."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("dashboard")
    run_cli("experiments.train", *PRUNING, cwd=workdir, check=True, timeout=300)
    (folder,) = (workdir / "outputs" / "sweeps").iterdir()
    return folder


@pytest.fixture(scope="module")
def dashboard(sweep):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "experiments.sweep_dashboard", str(sweep), "--port", str(port)],
                              cwd=sweep, env={**os.environ, "PYTHONPATH": str(TESTS / "helpers")},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies")
        yield f"http://127.0.0.1:{port}", studies
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert server.returncode == 0, output[-2000:]
    assert f"http://localhost:{port}/dashboard" in output and "dashboard stopped" in output


def test_the_api_serves_the_study_and_its_trials(sweep, dashboard):
    base, studies = dashboard
    (summary,) = studies["study_summaries"]
    assert summary["study_name"] == sweep.name and summary["directions"] == ["minimize"]
    study = _get_json(f"{base}/api/studies/{summary['study_id']}")
    states = {t["number"]: t["state"] for t in study["trials"]}
    assert states == {0: "Complete", 1: "Pruned"}
    pruned = next(t for t in study["trials"] if t["number"] == 1)
    assert [v["step"] for v in pruned["intermediate_values"]] == [1]
    assert {a["key"] for a in pruned["user_attrs"]} >= {"run_dir", "pruned", "worker"}
    assert study.get("objective_names") == ["val/err_best"], "the objective has its name"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_a_real_browser_renders_the_trials(sweep, dashboard, tmp_path):
    base, studies = dashboard
    study_id = studies["study_summaries"][0]["study_id"]
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                             "--dump-dom", f"{base}/dashboard/studies/{study_id}/trials"],
                            capture_output=True, text=True, timeout=90)
    dom = result.stdout
    assert result.returncode == 0 and "<html" in dom, result.stderr[-2000:]
    for text in (sweep.name, "Trial 0", "Trial 1", "Complete", "Pruned", "optimizer.lr"):
        assert text in dom, f"{text!r} is not on the rendered page"


def test_a_folder_without_a_study_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("experiments.sweep_dashboard", str(tmp_path / "empty"), cwd=tmp_path, timeout=60)
    assert_refused(result, ["has no optuna.db", "--storage"])
