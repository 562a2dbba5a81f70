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

# Autograde only: run each submission in the confined kernel "rnn-grader" (rnnlib/grading.py): memory, CPU,
# process and file-size caps, no network, the course's solutions/submissions/gradebook hidden, user nobody;
# whatever this machine refuses is skipped and named in the kernel's log line. Validate and JupyterLab are
# unaffected. Limits: c.GraderKernelManager.memory_limit / cpu_limit / process_limit / user / ...
# Keep this last: it swaps Execute in whatever autograde steps are configured above.
from rnnlib.grading import autograde_preprocessors  # noqa: E402

c.Autograde.autograde_preprocessors = autograde_preprocessors(c.Autograde.get("autograde_preprocessors"))
