"""Lesson 05's viewer in a real JupyterLab, driven in a real (headless) Chromium.

Starts JupyterLab on 127.0.0.1 with a token, opens lesson 05, runs all cells, moves
the viewer's quantile slider with the keyboard and checks that the image panels
(the element with CSS class ``micranet-viewer-panels``, not the whole output with
the slider) are redrawn, and that no cell printed a traceback. Screenshots go to
outputs/browser/.

Needs Debian's chromium (``.ci/run`` installs it) and the ``playwright`` Python
package pointed at /usr/bin/chromium (Playwright's own browser download is not used).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "05_segmentation_detection.ipynb"
SHOTS = ROOT / "outputs" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of lesson 05; yields its base URL and token.

    A copy, so that JupyterLab's autosave never rewrites the committed notebook.
    """
    port, token = _free_port(), "micranet-browser-test"
    served = tmp_path / "served"
    served.mkdir()
    if LESSON.exists():
        shutil.copy(LESSON, served / LESSON.name)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    notebook_settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True)
    # render every cell (no virtual scrolling), so that all outputs are in the page
    (notebook_settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = dict(os.environ, MICRANET_FAST="1", JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               MICRANET_WORKDIR=os.environ.get("MICRANET_WORKDIR", str(ROOT / "outputs" / "test-work")))
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={served}", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_viewer_slider_changes_the_image_in_a_real_browser(jupyterlab):
    if CHROMIUM is None:
        pytest.skip("no chromium browser installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    if not LESSON.exists():
        pytest.skip("lesson 05 does not exist yet")
    base, token = jupyterlab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{base}/lab/tree/{LESSON.name}?token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=90_000)
            # on a slow machine JupyterLab may ask which kernel to start: take the proposed one
            select = page.locator(".jp-Dialog button", has_text="Select")
            try:
                select.wait_for(state="visible", timeout=8_000)
                select.click()
            except sync_api.TimeoutError:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            assert page.locator(".jp-Notebook .jp-Cell").count() > 10, "the lesson did not load in JupyterLab"
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            # wait until every cell has run: no prompt shows [*] and the kernel is idle
            page.wait_for_function(
                """() => document.querySelectorAll('.jp-InputPrompt').length > 0 &&
                   ![...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*')) &&
                   document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']") !== null""",
                timeout=600_000, polling=1000)
            page.screenshot(path=str(SHOTS / "lesson05_after_run_all.png"), full_page=False)
            text = page.locator(".jp-OutputArea-output").all_inner_texts()
            tracebacks = [t for t in text if "Traceback (most recent call last)" in t
                              or re.match(r"\w*(Error|Exception)\b", t.split("\n")[0])]   # not a message naming one
            assert not tracebacks, f"a cell printed an error in the browser: {tracebacks[0][:500]}"
            viewer = page.locator(".micranet-viewer").first
            viewer.scroll_into_view_if_needed()
            # only the image panels (viewer.py's widgets.Image with class micranet-viewer-panels),
            # not the whole output: the moved slider alone must not be enough to pass
            panels = viewer.locator(".micranet-viewer-panels")
            assert panels.count() == 1, "the viewer has no element with class micranet-viewer-panels"
            page.wait_for_timeout(1000)
            before = panels.screenshot(path=str(SHOTS / "viewer_panels_before.png"))
            handle = viewer.locator(".micranet-viewer-quantile .noUi-handle").first
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            page.wait_for_timeout(2500)
            after = panels.screenshot(path=str(SHOTS / "viewer_panels_after.png"))
            assert before != after, "moving the quantile slider did not redraw the viewer's image panels"
            text = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert not any("Traceback (most recent call last)" in t for t in text)
        finally:
            browser.close()
