#!/usr/bin/env bash
# Debian's chromium for the browser tests of the web UI (tests/ui/), which Playwright drives through its
# executable_path: Playwright's own browser download is never used (it fails on a closed network).
# Installs with apt-get when missing and run as root; otherwise says what to do (the tests then skip
# locally, and fail in CI).
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

if command -v chromium >/dev/null 2>&1 || [[ -n "${GPUSTACK_TEST_CHROMIUM:-}" ]]; then
    exit 0
fi
if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends chromium >&2; then
        exit 0
    fi
    log "apt-get install chromium failed (above)"
else
    log "chromium is not installed: run 'sudo apt-get install chromium' (or set GPUSTACK_TEST_CHROMIUM)"
fi
log "the browser tests (tests/ui/test_browser.py) will skip, or fail in CI"
