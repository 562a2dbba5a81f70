"""The course's grader: nbgrader plumbing and the sandbox that runs untrusted submissions (not part of rnnlib)."""
