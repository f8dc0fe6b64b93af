"""How a machine joins this cluster as a worker: the command, and where the cluster token is kept.

The token itself is never sent: whoever may join a worker can read it on the server, and a page that
showed it would hand it to anyone who saw the screen or the browser's cache."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gpustack.server.auth import context, require_admin

router = APIRouter(prefix="/v2/worker-join", tags=["workers"])


class WorkerJoin(BaseModel):
    token_file: str | None = Field(description="the file on the server that holds the cluster token")
    token_hint: str = Field(description="where to find the token, in words")
    server_port: int
    tls: bool = Field(description="whether the server serves https")
    command: str = Field(description="the command to run on the new machine; fill in <server> and <token>")


@router.get("", response_model=WorkerJoin, dependencies=[Depends(require_admin)])
async def worker_join(request: Request) -> WorkerJoin:
    """The command that joins a machine as a worker, and where on the server its token is."""
    config = context(request).config
    if config.token_file:
        token_file: str | None = config.token_file
        hint = f"on the server, run: sudo cat {token_file}"
    elif config.token:
        token_file = None
        hint = "the token this server was started with (--token, GPUSTACK_TOKEN or `token:` in config.yaml)"
    else:
        token_file = str(Path(config.data_dir) / "token")
        hint = f"on the server, run: sudo cat {token_file}"
    tls = bool(config.ssl_certfile)
    return WorkerJoin(
        token_file=token_file,
        token_hint=hint,
        server_port=config.port,
        tls=tls,
        command="gpustack start --server-url <server> --token <token>",
    )
