"""Tiny wheels built in a test, from a few lines of Python: a stand-in engine pip installs offline."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

ENGINE_SOURCE = '''"""A tiny engine: prints its version, or serves /health and /v1/models on --port."""
import http.server
import json
import sys

VERSION = "{version}"


def main():
    args = sys.argv[1:]
    if "--port" not in args:
        print("tinyengine", VERSION)
        return
    port = int(args[args.index("--port") + 1])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({{"version": VERSION, "argv": args}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def build_wheel(
    folder: Path, name: str = "tinyengine", version: str = "0.1.0", script: str | None = None
) -> Path:
    """A pure-Python wheel with a module `name` and a console script `script` (default: `name`)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = script or name
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": ENGINE_SOURCE.format(version=version),
        f"{name}/__main__.py": f"from {name} import main\nmain()\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: gpustack-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{info}/entry_points.txt": f"[console_scripts]\n{script} = {name}:main\n",
    }
    path = folder / f"{name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            data = text.encode()
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path
