"""``python -m grader grade ASSIGNMENT ...``: grade a class in parallel (grader/parallel.py)."""

import sys

from grader import parallel

COMMANDS = {"grade": parallel.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m grader {{{','.join(COMMANDS)}}} ... (python -m grader grade --help)")
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
