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

import nbformat
from jupyter_cache import get_cache
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


NOTEBOOKS = "_notebooks"  # folder of the HTML output that holds the executed notebooks


def _executed_notebook(app: Sphinx, docname: str) -> Path:
    return Path(app.outdir).parent / "jupyter_execute" / f"{docname}.ipynb"


def _add_static_files(app: Sphinx, config: Config) -> None:
    config.html_static_path.append(str(Path(__file__).parent / "static"))


def _link_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if doctree is None or not _executed_notebook(app, pagename).is_file():
        return
    href = context["pathto"](f"{NOTEBOOKS}/{pagename}.ipynb", 1)
    name = f"{Path(pagename).name}.ipynb"
    link = ('<p class="rnn-notebook-download">Download this chapter as a notebook, executed, with its '
            f'outputs: <a class="reference download" href="{href}" download>{name}</a></p>')
    context["body"] = link + context.get("body", "")


def _copy_notebooks(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    cache = get_cache(Path(app.outdir).parent / ".jupyter_cache")
    for docname in sorted(app.env.found_docs):
        source = _executed_notebook(app, docname)
        if source.is_file():
            _, notebook = cache.merge_match_into_notebook(nbformat.read(source, as_version=4))
            target = Path(app.outdir, NOTEBOOKS, f"{docname}.ipynb")
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, target)


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _keep_only_mathjax_path)
    app.connect("config-inited", _add_static_files)
    app.add_css_file("book.css")
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    app.connect("html-page-context", _link_notebook)
    app.connect("build-finished", _copy_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
