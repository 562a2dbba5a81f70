# nbgrader configuration of the course (nbgrader 0.9.6). Run nbgrader from the repository root with
# .venv/bin first on PATH (nbgrader calls `alembic`). `make exercises` regenerates exercises/ from solutions/.
c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "rnn-course"
# solutions/<assignment>/<notebook>.ipynb is the single source; exercises/<assignment>/ is what learners get.
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# Instructor-side runtime folders (git-ignored): submitted/<student>/<assignment>/, autograded/, feedback/,
# gradebook.db in the course root.

# Per-cell limit while validating and autograding. Every exercise cell is written to run in well under 10 s
# on two busy cores; 60 s only guards against a learner's infinite loop.
c.ExecutePreprocessor.timeout = 60

# nbgrader's defaults, stated so the course's conventions are visible in one place:
# "### BEGIN SOLUTION" / "### END SOLUTION" becomes "# YOUR CODE HERE\nraise NotImplementedError()",
# and "### BEGIN HIDDEN TESTS" / "### END HIDDEN TESTS" is removed from the released notebooks.
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"

# Three changes to nbgrader 0.9.6's autograde pipelines, each found by tests/test_grading_matrix.py:
# - A deleted test cell is put back from the gradebook and graded (nbgrader's add_missing_cells, off by
#   default, left it at 0 points "needing manual grading" forever). nbgrader's own version raises KeyError
#   when the cell before the deleted one is locked but not graded (a demo cell); RestoreDeletedCells puts each
#   missing graded cell after the nearest earlier cell of the source that the submission still has.
# - A submission that duplicates a cell (same grade_id twice) must not stop the batch. DeduplicateIds empties
#   the metadata of the extra copies to {}, which CheckCellMetadata takes for an old metadata format: it
#   aborts the whole `nbgrader autograde` run, leaving every later student ungraded. DropEmptiedMetadata
#   removes that metadata entirely (the extra copies run as plain code; the last copy is graded).
# - A test cell scores 0 if it errors, not because something printed to stderr (a library's warning): nbgrader
#   counts any stderr output as a failure. Every error, even with tracebacks hidden by the learner, is still
#   an "error" output (nbgrader adds one from the kernel's reply).
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    Execute,
    IgnorePattern,
    LimitOutput,
    NbGraderPreprocessor,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)
from traitlets import Bool  # noqa: E402


class DropEmptiedMetadata(NbGraderPreprocessor):
    """Remove the empty nbgrader metadata DeduplicateIds leaves on a duplicated cell."""

    def preprocess_cell(self, cell, resources, index):
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


class RestoreDeletedCells(OverwriteCells):
    """OverwriteCells that also puts back the graded cells a submission deleted."""

    add_missing_cells = Bool(True).tag(config=True)

    def add_missing_grade_cells(self, nb, resources):
        source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        order = [cell.name for cell in source.source_cells]
        answers = {cell.name for cell in source.solution_cells}
        for grade_cell in sorted(source.grade_cells, key=lambda cell: order.index(cell.name)):
            where = {cell.metadata.get("nbgrader", {}).get("grade_id"): i for i, cell in enumerate(nb.cells)}
            if grade_cell.name in where:
                continue
            self.log.warning("Missing grade cell %s: put back from the gradebook", grade_cell.name)
            index = order.index(grade_cell.name)
            restored = self.missing_cell_transform(
                source.source_cells[index], grade_cell.max_score, is_solution=grade_cell.name in answers
            )
            after = [where[name] + 1 for name in order[:index] if name in where]
            nb.cells.insert(max(after, default=0), restored)
        return nb, resources


class SaveAutoGradesIgnoringStderr(SaveAutoGrades):
    """SaveAutoGrades looking at a cell's errors only, not at its stderr stream (the outputs are kept)."""

    def preprocess_cell(self, cell, resources, index):
        outputs = cell.get("outputs")
        if outputs is None:
            return super().preprocess_cell(cell, resources, index)
        cell.outputs = [o for o in outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
        try:
            return super().preprocess_cell(cell, resources, index)
        finally:
            cell.outputs = outputs


c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DeduplicateIds,
    DropEmptiedMetadata,
    OverwriteKernelspec,
    RestoreDeletedCells,
    CheckCellMetadata,
]
c.Autograde.autograde_preprocessors = [
    Execute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGradesIgnoringStderr,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Autograde only: run each submission in the confined kernel "rnn-grader" (rnnlib/grading.py): memory, CPU,
# process and file-size caps, no network, the course's solutions/submissions/gradebook hidden, user nobody;
# whatever this machine refuses is skipped and named in the kernel's log line. Validate and JupyterLab are
# unaffected. Limits: c.GraderKernelManager.memory_limit / cpu_limit / process_limit / user / ...
# Keep this last: it swaps Execute in whatever autograde steps are configured above.
from rnnlib.grading import autograde_preprocessors  # noqa: E402

c.Autograde.autograde_preprocessors = autograde_preprocessors(c.Autograde.get("autograde_preprocessors"))
