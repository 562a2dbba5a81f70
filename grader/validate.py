"""Validate scores like the grader: a test cell fails on an error, not on a warning printed to stderr.

nbgrader 0.9.6's Validate (the JupyterLab button and ``nbgrader validate``) counts any stderr output of a
test cell as a failure; the course's autograde does not (grader.grading's SaveAutoGradesIgnoringStderr).
Validator's preprocessors are not configurable and nbgrader's Execute owns nbclient's per-cell hook, but
nbclient's ``on_notebook_complete`` hook is a setting: nbgrader_config.py sets
``c.Execute.on_notebook_complete`` to the function below. It acts only while nbgrader validates (nbgrader sets
NBGRADER_EXECUTION=validate around it), on graded cells, in Validate's own executed copy of the notebook:
the learner's notebook keeps the warning, and the Validate report lists a test cell only if it raised.
"""

import os
from typing import Any

from nbformat import NotebookNode
from nbgrader.utils import is_grade


def drop_stderr_while_validating(notebook: NotebookNode, **_: Any) -> None:
    """Remove the stderr stream outputs of the graded cells of a notebook nbgrader validate has just run."""
    if os.environ.get("NBGRADER_EXECUTION") != "validate":
        return
    for cell in notebook.cells:
        if cell.cell_type == "code" and is_grade(cell):
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
