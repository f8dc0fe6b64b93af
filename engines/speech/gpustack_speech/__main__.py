"""Command line: serve one speech model folder, with vox-box or (for hibari voices) with this package.

    gpustack-speech --model DIR --host 127.0.0.1 --port 8080 [--device cpu] [--data-dir DIR]

vox-box serves every folder it recognises (faster-whisper, FunASR, Bark, CosyVoice, Dia) with its
own app and routes, run in this process; a folder with hibari's voices.json is served by
gpustack_speech.app. Both listen only once the model is loaded, so GET /health answering 200 means
ready. Exit status 2: the folder cannot be served (the message says why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpustack_speech.formats import HibariModel, ModelFolderError, check_folder, hibari_model

VOX_BOX_FORMATS = (
    "faster-whisper (CTranslate2: model.bin and tokenizer.json), FunASR, Bark, CosyVoice and Dia folders"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpustack-speech", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--device", default="cpu", help="vox-box's device: cpu or cuda:N (default cpu)")
    parser.add_argument("--data-dir", help="vox-box's data folder (default ~/.cache/gpustack-speech)")
    parser.add_argument("--served-model-name", help="the model id /v1/models reports (hibari voices)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per voice (hibari)")
    parser.add_argument("--debug", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535 (got {args.port})")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1 (got {args.threads})")
    return args


def fail(message: str) -> int:
    print(f"gpustack-speech: error: {message}", file=sys.stderr, flush=True)
    return 2


def serve_hibari(model: HibariModel, args: argparse.Namespace) -> int:
    import uvicorn

    from gpustack_speech.app import create_app
    from gpustack_speech.tts import HibariSpeech

    try:
        engine = HibariSpeech(model, threads=args.threads)
    except Exception as exc:  # onnxruntime's and hibari's own errors: report, exit non-zero
        return fail(f"cannot load the hibari voices in {model.folder}: {exc}")
    model_id = args.served_model_name or model.folder.name
    print(
        f"gpustack-speech: hibari voices {', '.join(engine.voices)} from {model.folder} loaded; "
        f"serving {model_id!r} on http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    app = create_app(engine, model_id)
    uvicorn.run(
        app, host=args.host, port=args.port, access_log=False, log_level="debug" if args.debug else "info"
    )
    return 0


def serve_vox_box(folder: Path, args: argparse.Namespace) -> int:
    # Imported only here: vox-box loads torch, transformers and every backend it has (about 5 s).
    from importlib.metadata import version

    from vox_box.cmd.start import parse_args as vox_box_config
    from vox_box.cmd.start import run_model_instance, run_server
    from vox_box.logging import setup_logging
    from vox_box.utils.model import preconfigure_faster_whisper_env

    data_dir = args.data_dir or str(Path.home() / ".cache" / "gpustack-speech")
    cfg = vox_box_config(
        argparse.Namespace(
            debug=args.debug,
            host=args.host,
            port=args.port,
            model=str(folder),
            device=args.device,
            huggingface_repo_id=None,
            model_scope_model_id=None,
            data_dir=data_dir,
        )
    )
    setup_logging(cfg.debug)
    preconfigure_faster_whisper_env(cfg)
    # vox-box's own `vox-box start` logs a failed load and exits 0; here it is exit 2 with the reason.
    try:
        run_model_instance(cfg)
    except Exception as exc:
        return fail(
            f"vox-box {version('vox-box')} cannot serve {folder}: {exc}. "
            f"It loads {VOX_BOX_FORMATS}; gpustack-speech itself serves hibari voice folders "
            "(voices.json and the voices' .onnx files)"
        )
    run_server(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        folder = check_folder(args.model)
        hibari = hibari_model(folder)
    except ModelFolderError as exc:
        return fail(str(exc))
    if hibari is not None:
        return serve_hibari(hibari, args)
    return serve_vox_box(folder, args)


if __name__ == "__main__":
    sys.exit(main())
