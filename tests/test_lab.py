"""The learner's workflow for real: ``make lab`` starts JupyterLab 4 on a private copy of the exercises, and
nbgrader's Validate button in the notebook toolbar reports the unsolved cells, in headless Chromium.

The copy never overwrites a notebook the learner already has (their answers survive course updates). The
server runs with the learner's configuration (jupyter-learner/): no formgrader, course or assignment list,
and no error in its log. Validate scores like the grader: a solved notebook whose test cell prints a warning
on stderr passes (nbgrader 0.9.6 alone would fail it; grader/validate.py).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import CHROMIUM_ARGS, REPO
from playwright.sync_api import sync_playwright

ASSIGNMENT, NOTEBOOK = "03_lstm_gates", "lstm_gates.ipynb"
WARNED = "warned"  # a folder of the work copy: the solution, with a warning on stderr in each test cell
WARNING = "import sys, warnings\nwarnings.warn('a library warning')\nprint('note', file=sys.stderr)\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """`make lab` on a fresh work folder holding one notebook the learner already edited and a solved one
    whose test cells warn; (the notebook's URL, the work folder, the server's log)."""
    folder = tmp_path_factory.mktemp("lab")
    work, log = folder / "my-work", folder / "server.log"
    (work / "01_recurrent_cell").mkdir(parents=True)
    edited = work / "01_recurrent_cell" / "recurrent_cell.ipynb"
    edited.write_text('{"learner": "my answers"}', encoding="utf-8")
    solved = nbformat.read(REPO / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    for cell in solved.cells:
        if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code":
            cell.source = WARNING + cell.source
    (work / WARNED).mkdir()
    nbformat.write(solved, work / WARNED / NOTEBOOK)
    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    args += " --allow-root" if os.geteuid() == 0 else ""  # CI containers run as root
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "lab", f"WORK={work}", f"LAB_ARGS={args}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, text=True, start_new_session=True,
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
                raise RuntimeError(f"make lab did not start JupyterLab: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"{base}/lab/tree/{{}}/{NOTEBOOK}?token={token}", work, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def test_make_lab_copies_exercises_without_clobbering(lab: tuple[str, Path, Path]) -> None:
    _, work, _ = lab
    released = sorted(p.relative_to(REPO / "exercises") for p in (REPO / "exercises").rglob("*.ipynb"))
    assert released and all((work / p).is_file() for p in released)
    copied, released_nb = work / ASSIGNMENT / NOTEBOOK, REPO / "exercises" / ASSIGNMENT / NOTEBOOK
    assert copied.read_bytes() == released_nb.read_bytes()
    edited = work / "01_recurrent_cell" / "recurrent_cell.ipynb"
    assert json.loads(edited.read_text()) == {"learner": "my answers"}


def validate(url: str) -> str:
    """Open the notebook at ``url`` in Chromium, press Validate, return the text of the results dialog."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}&reset", timeout=90_000)  # reset: only this notebook open
            button = page.locator(".validate-button").first
            button.wait_for(state="visible", timeout=90_000)
            button.click()
            dialog = page.locator(".jp-Dialog").filter(has_text="Validation Results")
            dialog.wait_for(timeout=120_000)
            return dialog.inner_text()
        finally:
            browser.close()


def test_validate_button_reports_unsolved_exercise(lab: tuple[str, Path, Path]) -> None:
    url, _, _ = lab
    text = validate(url.format(ASSIGNMENT))
    assert "failed" in text.lower() and "NotImplementedError" in text, text[:2000]


def test_validate_button_passes_a_solution_whose_tests_warn(lab: tuple[str, Path, Path]) -> None:
    """A warning on stderr in every test cell: Validate scores it like the grader, all tests pass."""
    url, _, _ = lab
    text = validate(url.format(WARNED))
    assert "Success! Your notebook passes all the tests." in text, text[:2000]


def test_no_instructor_tools_and_no_error_in_the_log(lab: tuple[str, Path, Path]) -> None:
    """The learner's server: no formgrader (its page is not found), Validate's handler there, a clean log."""
    url, _, log = lab
    base, token = url.split("/lab/")[0], url.split("token=")[1]
    for path, status in (("formgrader", 404), ("assignments", 404), ("courses", 404)):
        try:
            with urllib.request.urlopen(f"{base}/{path}?token={token}", timeout=10) as response:
                got = response.status
        except urllib.error.HTTPError as error:
            got = error.code
        assert got == status, (path, got)
    text = log.read_text()
    lines = text.splitlines()
    errors = [line for line in lines if line.startswith("[E ") or "Traceback" in line]
    formgrader = [line for line in lines if "formgrader" in line and "404 GET /formgrader" not in line]
    assert not errors and not formgrader, text[-3000:]
    assert "nbgrader.server_extensions.validate_assignment | extension was successfully loaded" in text
