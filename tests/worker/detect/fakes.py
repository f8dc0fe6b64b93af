"""Fake vendor tools for detector tests: real executables on PATH, so run_tool itself is exercised."""

from __future__ import annotations

import sys
from pathlib import Path


def fake_tool(
    bin_dir: Path,
    name: str,
    answers: dict[str, tuple[str, int]],
    sleep: float = 0,
    failures_on_stderr: bool = False,
) -> Path:
    """An executable that prints the recorded text for the arguments it is given, with its exit code.

    Unexpected arguments fail with exit code 2. With `failures_on_stderr`, a non-zero answer goes to
    stderr, as most tools print their errors.
    """
    script = bin_dir / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        f"time.sleep({sleep!r})\n"
        f"answers = {answers!r}\n"
        "args = ' '.join(sys.argv[1:])\n"
        "if args not in answers:\n"
        "    sys.stderr.write('unexpected arguments: ' + args + '\\n')\n"
        "    sys.exit(2)\n"
        "text, code = answers[args]\n"
        f"(sys.stderr if code != 0 and {failures_on_stderr!r} else sys.stdout).write(text)\n"
        "sys.exit(code)\n"
    )
    script.chmod(0o755)
    return script
