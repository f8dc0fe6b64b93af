"""Time and peak memory of our GGUF header reader against the `gguf` package's GGUFReader on one file.

Usage: python bench/gguf_header.py [model.gguf ...]
Without a path it writes a model with a Gemma-3-sized vocabulary (262,144 tokens) to a temporary folder.
Each reader runs in its own process so that peak RSS belongs to that reader alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

_MEASURE = """
import json, resource, sys, time
path, reader = sys.argv[1], sys.argv[2]
if reader == "gpustack":
    from gpustack.estimate.gguf import read_gguf_header
else:
    from gguf import GGUFReader
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if reader == "gpustack":
    header = read_gguf_header(path)
    n_tensors, n_kv = len(header.tensors), len(header.metadata)
else:
    r = GGUFReader(path)
    n_tensors, n_kv = len(r.tensors), len(r.fields)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "import_mib": before / 1024,
                  "tensors": n_tensors, "kv": n_kv}))
"""


def _synthetic_model(folder: Path) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    path = folder / "vocab262k.gguf"
    writer = GGUFWriter(path, "gemma3")
    writer.add_block_count(1)
    writer.add_token_list([f"<token-{i}>" for i in range(262_144)])
    writer.add_token_scores([0.0] * 262_144)
    writer.add_token_types([1] * 262_144)
    writer.add_tensor("token_embd.weight", np.zeros((16, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _measure(path: Path, reader: str) -> dict[str, float]:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), reader],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
    )
    return json.loads(out.stdout)


def main(paths: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(p) for p in paths] or [_synthetic_model(Path(tmp))]
        print(
            f"{'file':32} {'reader':9} {'seconds':>8} {'RSS after import':>17} {'peak RSS MiB':>13} "
            f"{'tensors':>8} {'keys':>5}"
        )
        for path in files:
            for reader in ("gpustack", "gguf"):
                m = _measure(path, reader)
                print(
                    f"{path.name[:32]:32} {reader:9} {m['seconds']:8.3f} {m['import_mib']:17.1f} "
                    f"{m['peak_mib']:13.1f} {m['tensors']:8d} {m['kv']:5d}"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
