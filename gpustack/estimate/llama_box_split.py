"""How llama.cpp spreads offloaded layers over devices (-ngl with --tensor-split, layer split mode).

llama.cpp (src/llama-model.cpp, llama_model_base::load_tensors) offloads the *last* `-ngl` of the
n_layer + 1 layers (the output layer counts as the last one): the CPU keeps the first layers. The
proportions of --tensor-split are turned into cumulative fractions, and offloaded layer j (0-based
among the offloaded ones) goes to the first device whose cumulative fraction exceeds j / ngl, so the
output layer lands on the last device that gets any layer. The arithmetic is float32, reproduced here
exactly. Devices are ordered RPC servers first (in --rpc order), then local GPUs (src/llama.cpp,
llama_prepare_model_devices: "add RPC servers at the front of the list").
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence
from dataclasses import dataclass

_F32 = struct.Struct("<f")


@dataclass
class DeviceSplit:
    """Memory of one placement: RAM of the host running llama-box, and bytes on each device in order."""

    ram: int
    vram: list[int]


@dataclass
class OffloadRow:
    """Memory with `layers` layers offloaded to one device."""

    layers: int
    ram: int
    vram: int


def _f32(x: float) -> float:
    """Round to float32 (double rounding is exact for one +, -, * or / of float32 operands)."""
    return float(_F32.unpack(_F32.pack(x))[0])


def tensor_split_for(layers_per_device: Sequence[int]) -> str:
    """The --tensor-split value that makes llama.cpp put exactly these layer counts on the devices.

    Pass it with `-ngl sum(layers_per_device)` (and `--split-mode layer`, the default); the counts
    themselves are the proportions, which is also what llama.cpp's own --fit writes.
    """
    if not layers_per_device:
        raise ValueError("tensor_split_for needs at least one device")
    if any(n < 0 for n in layers_per_device):
        raise ValueError(f"layer counts cannot be negative: {list(layers_per_device)}")
    return ",".join(str(int(n)) for n in layers_per_device)


def layers_from_tensor_split(proportions: Sequence[float], gpu_layers: int, total_layers: int) -> list[int]:
    """Layers each device gets from `-ngl gpu_layers -ts proportions` for a model of `total_layers`.

    All-zero proportions mean "by free memory" in llama.cpp, which only the engine knows: refused here.
    """
    n_devices = len(proportions)
    offloaded = max(0, min(gpu_layers, total_layers)) if n_devices else 0
    counts = [0] * n_devices
    if offloaded == 0:
        return counts
    if not any(proportions):
        raise ValueError("an all-zero --tensor-split splits by free memory, which only the engine can see")
    splits = []
    running = 0.0
    for p in proportions:
        running = _f32(running + _f32(p))
        splits.append(running)
    splits = [_f32(s / running) for s in splits]
    for j in range(offloaded):
        device = bisect.bisect_right(splits, _f32(j / offloaded))
        counts[min(device, n_devices - 1)] += 1
    return counts


def layer_devices(total_layers: int, layers_per_device: Sequence[int]) -> list[int | None]:
    """The device of each layer (output layer last); None = the CPU, which keeps the first layers."""
    offloaded = sum(layers_per_device)
    if any(n < 0 for n in layers_per_device):
        raise ValueError(f"layer counts cannot be negative: {list(layers_per_device)}")
    if offloaded > total_layers:
        raise ValueError(
            f"{offloaded} layers placed on devices, but the model has only {total_layers} "
            f"(including the output layer)"
        )
    devices: list[int | None] = [None] * (total_layers - offloaded)
    for device, count in enumerate(layers_per_device):
        devices += [device] * count
    return devices
