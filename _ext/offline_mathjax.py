"""Serve MathJax 3 from the book's own ``_static/mathjax`` (installed from npm by ``make book``).

Jupyter Book 1 registers every ``*.js`` file under ``_static`` as a ``<script>`` on every page, which
would load all ~90 MathJax components (SVG and CHTML outputs, the Node.js entry point, ...) next to
the one component ``mathjax_path`` names. This extension keeps only ``mathjax_path`` and fails the
build with a clear message when MathJax has not been installed, instead of a book whose equations
silently stay raw TeX.
"""

from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError


def _keep_only_mathjax_path(app: Sphinx, config: Config) -> None:
    local = Path(app.confdir, "_static", config.mathjax_path)
    if "://" not in config.mathjax_path and not local.is_file():
        raise ConfigError(f"MathJax not found at {local}: run `make book` (it installs MathJax 3 from npm)")
    config.html_js_files = [f for f in config.html_js_files if not str(f).startswith("mathjax/")]
    config.html_static_path = list(dict.fromkeys(config.html_static_path))


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _keep_only_mathjax_path)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
