"""Small fixes to the HTML that Jupyter Book 1 generates, so that every page loads without errors offline.

- MathJax 3 is served from the book's own ``_static/mathjax`` (installed from npm by ``make book``). Jupyter
  Book registers every ``*.js`` file under ``_static`` as a ``<script>`` on every page, which would load all
  ~90 MathJax components (SVG and CHTML outputs, the Node.js entry point, ...) next to the one component
  ``mathjax_path`` names; only that one is kept. A missing MathJax fails the build with a clear message
  instead of leaving the equations as raw TeX.
- Inline scripts registered by extensions after the builder started (sphinx-thebe's ``const THEBE_JS_URL``,
  sphinx-togglebutton's selector) end up twice in each page, once with filename ``None`` and once with
  ``''``; the repeated ``const`` is a JavaScript error. Each page keeps the first copy of each script.
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


def _drop_repeated_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _keep_only_mathjax_path)
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
