"""`dynagen report RUN` and `dynagen report SWEEP`: one self-contained report.html, rendered in a real headless browser (Debian's chromium,
installed by .ci/run): the screenshot shows the table and the plots (not a blank page), the DOM holds the
tables, and the page loads nothing from outside (images inlined as base64)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from dynagen.platform import cli, registry
from dynagen.platform.launch import train_locally
from tests.experiments import TOY

registry.register(TOY)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_run_report_is_self_contained_and_renders_its_table_and_plots(tmp_path, one_torch_thread):
    storage = str(tmp_path / "runs")
    result = train_locally("toy", {"steps": 30, "log_every": 5}, storage=storage, name="run1")
    # a model artifact, as the models write them: the report shows the latest of each kind
    for step, shade in ((10, 40), (20, 200)):
        (result.run_dir / "samples").mkdir(exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), shade, np.uint8)).save(result.run_dir / "samples" / f"sample_{step:08d}.png")
    assert cli.main(["report", "run1", "--storage", storage]) == 0
    page = result.run_dir / "report.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text) and "<link" not in text and "<script" not in text
    assert text.count("data:image/png;base64,") == 4  # loss, weight_error, start_step curves + one sample kind
    assert "samples/sample_00000020" in text and "sample_00000010" not in text
    assert "Provenance" in text and "dynagen" in text

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table>" in dom.stdout and "weight_error" in dom.stdout and "Final metrics" in dom.stdout
    screenshot = tmp_path / "report.png"
    shot = _chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,1600", page.as_uri())
    assert screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280)
    # a blank page has variance 0; the table's text and borders and the plots' lines vary the pixels across the page
    top, bottom = pixels[:800], pixels[800:]
    assert pixels.std() > 10 and top.std() > 5 and bottom.std() > 5, (pixels.std(), top.std(), bottom.std())


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_sweep_report_shows_the_comparison_the_agreement_and_each_groups_best_flow(ray_cluster, tmp_path):
    # The demo sweep reduced (one activation, finite and infinite widths, two seeds, 4 steps of 16 particles): what
    # `make demo` hands a collaborator. Its particles: the generated toy targets.
    from tests.test_gantk_sweeps import REDUCED

    storage = str(tmp_path / "runs")
    assert cli.main(["sweep", "activations_demo", "--storage", storage, "--set", "arch=relu",
                     *(word for text in REDUCED for word in ("--set", text)), "--seeds", "0", "1"]) == 0
    assert cli.main(["report", "activations_demo", "--storage", storage, "--group-by", "arch", "width",
                     "--metric", "sinkhorn", "energy"]) == 0
    page = tmp_path / "runs" / "activations_demo" / "report.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text) and "<link" not in text and "<script" not in text
    for heading in ("Comparison", "Metrics", "Analysis: agreement", "Samples: the best trial of each group", "Provenance"):
        assert f"<h2>{heading}</h2>" in text, heading
    assert "sinkhorn ci95" in text and "not available" not in text  # the CIs, and the agreement did apply
    groups = re.findall(r"<h3>arch=relu, width=(\d+): best trial", text)
    assert len(groups) >= 2 and "0" in groups  # the infinite width (0) beside finite ones, each with its best trial
    assert text.count("data:image/png;base64,") >= 2 + len(groups)  # two metric plots, a flow per group

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "sinkhorn mean" in dom.stdout, dom.stderr[-2000:]
    screenshot = tmp_path / "report.png"
    shot = _chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,1600", page.as_uri())
    assert screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    top, bottom = pixels[:800], pixels[800:]  # the tables above, the plots below: neither half blank
    assert top.std() > 5 and bottom.std() > 5, (top.std(), bottom.std())
