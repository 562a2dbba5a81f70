"""The learner's workflow for real: ``make lab`` starts JupyterLab 4 on a private copy of the exercises, and
nbgrader's Validate button in the notebook toolbar reports the unsolved cells, in headless Chromium.

The copy never overwrites a notebook the learner already has (their answers survive course updates).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.test_book import CHROMIUM_ARGS, REPO

ASSIGNMENT, NOTEBOOK = "03_lstm_gates", "lstm_gates.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`make lab` on a fresh work folder holding one notebook the learner already edited."""
    work = tmp_path_factory.mktemp("lab") / "my-work"
    (work / "01_recurrent_cell").mkdir(parents=True)
    edited = work / "01_recurrent_cell" / "recurrent_cell.ipynb"
    edited.write_text('{"learner": "my answers"}', encoding="utf-8")
    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    args += " --allow-root" if os.geteuid() == 0 else ""  # CI containers run as root
    process = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"WORK={work}", f"LAB_ARGS={args}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make lab did not start JupyterLab: {process.stderr.read()[-3000:]}")
            time.sleep(0.5)
        yield f"{base}/lab/tree/{ASSIGNMENT}/{NOTEBOOK}?token={token}", work
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def test_make_lab_copies_exercises_without_clobbering(lab: tuple[str, Path]) -> None:
    _, work = lab
    released = sorted(p.relative_to(REPO / "exercises") for p in (REPO / "exercises").rglob("*.ipynb"))
    assert released and all((work / p).is_file() for p in released)
    copied, released_nb = work / ASSIGNMENT / NOTEBOOK, REPO / "exercises" / ASSIGNMENT / NOTEBOOK
    assert copied.read_bytes() == released_nb.read_bytes()
    edited = work / "01_recurrent_cell" / "recurrent_cell.ipynb"
    assert json.loads(edited.read_text()) == {"learner": "my answers"}


def test_validate_button_reports_unsolved_exercise(lab: tuple[str, Path]) -> None:
    url, _ = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url, timeout=90_000)
            button = page.locator(".validate-button").first
            button.wait_for(state="visible", timeout=90_000)
            button.click()
            dialog = page.locator(".jp-Dialog").filter(has_text="Validation Results")
            dialog.wait_for(timeout=120_000)
            text = dialog.inner_text()
        finally:
            browser.close()
    assert "failed" in text.lower() and "NotImplementedError" in text, text[:2000]
