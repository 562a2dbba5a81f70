"""The book's take-away formats: each chapter's executed notebook, downloadable from its page and runnable
top to bottom in the course environment, and the PDF of `make pdf`.

Both read what `make book` built (``_build/html``); the PDF test builds ``_build/latex`` itself with Jupyter
Book's pdflatex builder (XeLaTeX; execution comes from the same cache) and reads it back with pdftotext.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import PAGES, REPO
from nbclient import NotebookClient

HTML = REPO / "_build" / "html"
NOTEBOOK_LINK = re.compile(r'class="rnn-notebook-download">.*?href="([^"]+\.ipynb)"', re.S)
# Math that was not typeset reaches LaTeX as escaped text (\textbackslash{}frac ...) outside code blocks;
# code and its outputs (the char-LSTM's samples quote the book's TeX) are verbatim, any backslash allowed.
TEX = "odot|frac|begin|end|left|right|operatorname|mathbb|cdot|tanh|sigma"
RAW_TEX = re.compile(rf"\\textbackslash\{{\}}({TEX})")
VERBATIM = re.compile(r"\\begin\{sphinxVerbatim\}.*?\\end\{sphinxVerbatim\}", re.S)


def chapters_with_code() -> list[str]:
    """Pages of the table of contents that are notebooks (have code cells), e.g. 'book/lstm'."""
    return [doc for doc in PAGES if "```{code-cell}" in (REPO / f"{doc}.md").read_text(encoding="utf-8")]


def built_page(doc: str) -> str:
    page = HTML / f"{doc}.html"
    if not page.is_file():
        pytest.fail(f"{page} is missing: run `make book` first", pytrace=False)
    return page.read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("doc", chapters_with_code())
def test_chapter_offers_its_executed_notebook_and_it_runs(doc: str, tmp_path: Path) -> None:
    match = NOTEBOOK_LINK.search(built_page(doc))
    assert match, f"{doc}.html has no link to its notebook"
    notebook_path = (HTML / doc).parent / match.group(1)
    assert notebook_path.is_file(), f"{doc}.html links {match.group(1)}, which is not in the built book"

    notebook = nbformat.read(notebook_path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and any(cell.get("outputs") for cell in code), f"{notebook_path.name} has no executed outputs"

    # Run it as a learner would: a fresh kernel, in a folder beside the chapters (char_lstm reads book/*.md).
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1")
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "book")}})
    skipped = {"skip-execution"}
    for cell in code:
        if skipped & set(cell.metadata.get("tags", [])):
            cell.source = ""  # the book does not run these either (interactive widgets)
    client.execute(env=env)  # passed on to the kernel manager's start_kernel
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, json.dumps(errors)[:2000]


@pytest.mark.slow
def test_make_pdf_builds_the_whole_book() -> None:
    missing = [tool for tool in ("xelatex", "latexmk", "pdftotext") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: `make texlive` installs them from Debian")
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    cmd = [str(venv_bin / "jupyter-book"), "build", str(REPO), "--builder", "pdflatex"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    output = f"{result.stdout[-8000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{output}"
    pdf = REPO / "_build" / "latex" / "book.pdf"
    assert pdf.is_file(), f"no {pdf}"

    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    flat = " ".join(text.split())
    for doc in PAGES:
        lines = (REPO / f"{doc}.md").read_text(encoding="utf-8").splitlines()
        title = next(line[2:].strip() for line in lines if line.startswith("# "))
        assert title in flat, f"chapter title {title!r} ({doc}) is not in the PDF's text"
    prose = VERBATIM.sub("", (REPO / "_build" / "latex" / "book.tex").read_text(encoding="utf-8"))
    raw = sorted({m.group(0) for m in RAW_TEX.finditer(prose)})
    assert not raw, f"math left as text in the PDF: {raw}"
    assert "\\(" in prose or "\\begin{equation" in prose or "$" in prose  # there is typeset math
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, timeout=120)
    n_images = len(images.stdout.splitlines()) - 2  # two header lines
    assert n_images >= 20, f"the PDF holds {n_images} images; the book has more figures and diagrams"
