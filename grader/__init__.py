"""The course's grader: nbgrader plumbing and the sandbox for untrusted submissions (not part of rnnlib)."""
