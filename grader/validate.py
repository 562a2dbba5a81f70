"""Validate scores like the grader: a test cell fails on an error, not on a warning printed to stderr.

nbgrader 0.9.6's Validate (the JupyterLab button and ``nbgrader validate``) counts any stderr output of a
test cell as a failure; the course's autograde does not (grader.grading's SaveAutoGradesIgnoringStderr).
Validate runs nbgrader's ``Validator``, whose preprocessors (CheckCellMetadata, ClearOutput, Execute) are
not a setting, and nbclient gives no configurable hook after a cell's outputs are in. So nbgrader_config.py
(read by both the button's server extension and the command) calls ``use_in_validate()``: Validator's
default list gets ``ValidateExecute`` in place of Execute. It drops the stderr stream outputs of a graded cell
once the cell has run, in Validate's own executed copy: the learner's notebook keeps the warning, and the
report lists a test cell only if it raised. Autograde and the learner's kernel are untouched.
"""

from typing import Any

from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade
from nbgrader.validator import Validator


class ValidateExecute(Execute):
    """nbgrader's Execute, for Validate: a graded cell's stderr is not counted as a failure."""

    def on_cell_executed(self, **kwargs: Any) -> None:
        super().on_cell_executed(**kwargs)  # nbgrader's: an error hidden by the learner becomes an output
        cell = kwargs["cell"]
        if is_grade(cell):
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]


def use_in_validate() -> None:
    """Make nbgrader's Validator run ValidateExecute where it runs Execute (idempotent)."""
    trait = Validator.class_traits()["preprocessors"]  # a traitlets List: its default is default_args[0]
    trait.default_args = ([ValidateExecute if p is Execute else p for p in trait.default_args[0]],)
