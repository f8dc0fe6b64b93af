"""Model evaluations: whether and where models would be placed now, with the scheduler's reasons, and
nothing created. What a deploy form shows before the user commits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, ValidationError

from gpustack.scheduler.candidates import Assignment, NoPlacement
from gpustack.schemas.models import ModelCreate
from gpustack.server import json_body
from gpustack.server.auth import context, require_admin
from gpustack.server.controllers.scheduler import cluster_snapshot, evaluate
from gpustack.server.errors import BadRequest
from gpustack.server.requirements import EstimateError

router = APIRouter(prefix="/v2/model-evaluations", tags=["model-evaluations"])


class EvaluationRequest(BaseModel):
    models: list[ModelCreate] = Field(min_length=1, max_length=100)


def _assignment(assignment: Assignment) -> dict[str, Any]:
    worker = assignment.worker
    return {
        "worker_id": worker.id,
        "worker_name": worker.name,
        "gpu_ids": [gpu.id for i in assignment.gpu_indexes if (gpu := worker.gpu(i)) is not None],
        "ram": assignment.claim.ram,
        "vram": {str(k): v for k, v in assignment.claim.vram.items()},
        "cpu_threads": assignment.claim.cpu_threads,
        # llama-box: layers per GPU (in gpu_ids order); of the main worker's claim, offload_layers of
        # total_layers are on GPUs (its own and the subordinates'), the rest on its CPU
        "gpu_layers": assignment.layers,
        "offload_layers": assignment.claim.offload_layers,
        "total_layers": assignment.claim.total_layers,
    }


# The body is read by hand (one model or a list); documented here so that clients and fuzzers see it.
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": (
                        '{"models": [model, ...]} with the fields of POST /v2/models, or one model'
                    ),
                }
            }
        },
    }
}


@router.post("", dependencies=[Depends(require_admin)], openapi_extra=_BODY)
async def evaluate_models(request: Request) -> dict[str, Any]:
    """Body: {"models": [model, ...]} (the fields of POST /v2/models), or one model.

    The models are evaluated in order, each replica after the previous ones' claims, as if deployed together.
    """
    try:
        body = json_body.loads(await request.body())
    except json_body.BodyNotJSON as exc:
        raise BadRequest(str(exc)) from None
    if isinstance(body, dict) and "models" not in body:
        body = {"models": [body]}
    try:
        parsed = EvaluationRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise BadRequest(problems) from None
    ctx = context(request)
    async with ctx.session() as session:
        workers = await cluster_snapshot(session)
    results = []
    for spec in parsed.models:
        result: dict[str, Any] = {"name": spec.name, "compatible": False, "placements": []}
        try:
            for _ in range(max(spec.replicas, 1)):
                outcome = await evaluate(spec, spec.name, workers, ctx.requirements)
                result["requirement"] = outcome.requirement.description
                placement = outcome.placement
                if isinstance(placement, NoPlacement):
                    result |= {
                        "reasons": placement.reasons,
                        "hints": placement.hints,
                        "message": placement.message(),
                    }
                    break
                placement.apply()
                result["placements"].append(
                    {
                        "mode": placement.mode.value,
                        "summary": placement.summary,
                        "layout": placement.layout.model_dump(mode="json") if placement.layout else None,
                        "main": _assignment(placement.main),
                        "subordinates": [_assignment(a) for a in placement.subordinates],
                    }
                )
            else:
                result["compatible"] = True
        except EstimateError as exc:
            result |= {"reasons": [str(exc)], "hints": [], "message": str(exc)}
        results.append(result)
    return {"results": results}
