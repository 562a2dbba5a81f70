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

# Autograde (only) runs each submission in two processes (grader/grading.py, SplitExecute): answer cells in a
# throwaway bubblewrap sandbox of its own (uid, cgroup, namespaces; grader/sandbox.py), test cells from the
# source notebook in a trusted kernel that reads the learner's names as plain data. It refuses to grade when a
# protection cannot be set up, unless --SandboxKernelManager.allow_without="['cgroup']" (or 'sandbox') is
# given; then every log line says so. Limits: c.SandboxKernelManager.memory_limit / cpu_limit / process_limit.
# Three more grading steps, each found by tests/test_grading_matrix.py: deleted test cells put back, a
# duplicated cell no longer aborting the batch, stderr warnings no longer zeroing a test cell.
# Validate and JupyterLab are unaffected (the plain python3 kernel).
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    ClearOutput,
    DeduplicateIds,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
)

from grader.grading import (  # noqa: E402
    CheckCellMetadataCompiled,
    DropEmptiedMetadata,
    RestoreDeletedCells,
    SaveAutoGradesIgnoringStderr,
    SplitExecute,
    mark_unsafe_log,
)

mark_unsafe_log()  # an instructor's opt-out of a protection is named on every line of the log
# nbconvert validates the whole notebook after each of the steps below (30 ms a notebook of exercise 2):
# once, after the last, is enough (a malformed notebook still fails; the log then names the last step).
c.Exporter.optimistic_validation = True
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DeduplicateIds,
    DropEmptiedMetadata,
    OverwriteKernelspec,
    RestoreDeletedCells,
    CheckCellMetadataCompiled,
]
c.Autograde.autograde_preprocessors = [
    SplitExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGradesIgnoringStderr,
    AssignLatePenalties,
    CheckCellMetadataCompiled,
]

# Validate (the JupyterLab button and `nbgrader validate`) fails a test cell on an error only, as autograde
# does, not on a warning printed to stderr (nbgrader 0.9.6's Validate does): grader/validate.py.
from grader.validate import use_in_validate  # noqa: E402

use_in_validate()
