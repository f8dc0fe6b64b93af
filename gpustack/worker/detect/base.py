"""What every accelerator detector shares: the contract, running vendor tools safely, and errors."""

from __future__ import annotations

import shutil
import subprocess
from typing import Protocol

from gpustack.schemas.workers import GPUDevice

TOOL_TIMEOUT_SECONDS = 15.0


class DetectionError(Exception):
    """A detector could not tell what the machine has; the message is for the user, verbatim tool text
    included (e.g. npu-smi's 'dcmi model initialized failed, because the device is used. ret is -8020')."""


class Detector(Protocol):
    """One vendor's accelerators."""

    vendor: str

    def available(self) -> bool:
        """Whether this machine has the vendor's library or tool, i.e. whether detect() should run."""
        ...

    def detect(self) -> list[GPUDevice]:
        """The devices, without `id` (the caller adds `<worker name>:<type>:<index>`).

        Raises DetectionError when the tool fails, hangs, or answers something unreadable.
        """
        ...


def tool_on_path(name: str) -> str | None:
    return shutil.which(name)


def run_tool(argv: list[str], timeout: float = TOOL_TIMEOUT_SECONDS, cwd: str | None = None) -> str:
    """Run a vendor tool and return its standard output; every way it can fail is a DetectionError.

    A non-zero exit carries the tool's own output, verbatim, so the user sees the driver's message.
    A tool that exits 0 with nothing on stdout but something on stderr returns that, so the parser
    quotes it instead of reporting empty output.
    """
    command = " ".join(argv)
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, errors="replace", cwd=cwd
        )
    except FileNotFoundError:
        raise DetectionError(f"{argv[0]} is not installed or not on PATH") from None
    except PermissionError:
        raise DetectionError(f"{argv[0]} cannot be run: permission denied") from None
    except subprocess.TimeoutExpired:
        raise DetectionError(
            f"`{command}` did not answer within {timeout:.0f}s; the driver may be hung or the device busy"
        ) from None
    except OSError as exc:
        raise DetectionError(f"`{command}` could not start: {exc.strerror}") from None
    if completed.returncode != 0:
        said = (completed.stderr.strip() + "\n" + completed.stdout.strip()).strip()
        raise DetectionError(f"`{command}` failed (exit code {completed.returncode}): {said or 'no output'}")
    if not completed.stdout.strip() and completed.stderr.strip():
        return completed.stderr
    return completed.stdout


def malformed(tool: str, what: str, output: str) -> DetectionError:
    """The error for output a parser cannot read, quoting the start of what the tool said."""
    excerpt = " ".join(output.strip().split())[:200]
    return DetectionError(f"{tool} gave output that could not be read ({what}): {excerpt!r}")
