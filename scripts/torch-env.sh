#!/usr/bin/env bash
# A Python venv with a pip PyTorch 2.x, for the builds, tests, benches and packages that run
# against it (docs/install.md, "PyTorch 2.x from pip"):
#
#   bash scripts/torch-env.sh 2.13-cpu      torch==2.13.0+cpu (MKL, oneDNN)
#   bash scripts/torch-env.sh 2.14-cu130    torch==2.14.1 built for CUDA 13.0, with the nvidia-*
#                                           runtime libraries its metadata names (~4.5 GB)
#
# plus numpy, safetensors and tensorboard. Prints the venv's python on stdout (the only line
# there); progress and timings go to stderr. Idempotent: a finished venv (its stamp file written
# last) is reused as it is; an unfinished one is removed and made again. Concurrent calls wait
# for each other (flock).
#
# Where: $FISHERLENS_VENVS/<tag>, default ${XDG_CACHE_HOME:-~/.cache}/fisherlens/venv/<tag>:
# outside the checkout, so every clone and CI run on a machine shares one copy, and a fresh
# machine makes it once. The venv's Python is $FISHERLENS_VENV_PYTHON, else Debian's
# /usr/bin/python3 (python3-venv, installed by scripts/setup.sh), else python3 on PATH.
#
# Packages come from the machine's pip configuration (`pip config list`): every configured index
# is passed explicitly, the first as --index-url (so pip never retries an unreachable default
# index: 1.5 min instead of 30 s for a torch install), the rest as --extra-index-url, and every
# find-links folder as --find-links. Without any configured index pip's default is used.
#
# torch==2.14.1 declares cuda-bindings, which the local indexes lack: torch goes in with --no-deps,
# then each requirement of its metadata (markers evaluated for this Python) that some configured
# index offers; the ones none offers are named and left out (the addon needs only the CUDA
# libraries, which are all there).
set -euo pipefail

usage() { echo "usage: $0 2.13-cpu|2.14-cu130" >&2; exit 2; }
[ $# -eq 1 ] || usage
TAG=$1
case "$TAG" in
  2.13-cpu) TORCH_REQ='torch==2.13.0+cpu'; NO_DEPS=0 ;;
  2.14-cu130) TORCH_REQ='torch==2.14.1'; NO_DEPS=1 ;;
  *) usage ;;
esac
EXTRAS=(numpy safetensors tensorboard)

log() { echo "torch-env: $*" >&2; }
ROOT=${FISHERLENS_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/fisherlens/venv}
VENV=$ROOT/$TAG
STAMP=$VENV/.fisherlens-env
# What a finished venv must match; a change here makes the venv again
WANT="$TORCH_REQ ${EXTRAS[*]} no-deps=$NO_DEPS"

mkdir -p "$ROOT"
exec 9>"$ROOT/.$TAG.lock"
flock 9

if [ -f "$STAMP" ] && [ "$(head -1 "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c 'import torch, numpy, safetensors, tensorboard' 2>/dev/null; then
  log "$VENV is ready ($(sed -n 2p "$STAMP"))"
  echo "$VENV/bin/python"
  exit 0
fi

if [ -n "${FISHERLENS_VENV_PYTHON:-}" ]; then BASE=$FISHERLENS_VENV_PYTHON
elif [ -x /usr/bin/python3 ]; then BASE=/usr/bin/python3
else BASE=python3; fi
start=$(date +%s)
log "creating $VENV ($TORCH_REQ with $BASE, $("$BASE" --version 2>&1))"
rm -rf "$VENV"
"$BASE" -m venv "$VENV" || { log "'$BASE -m venv' failed: apt-get install python3-venv (scripts/setup.sh does it)"; exit 1; }
PY=$VENV/bin/python

# The configured indexes and find-links folders, in configuration order, each once
mapfile -t SOURCES < <("$PY" -m pip config list 2>/dev/null | "$PY" -c '
import shlex, sys
main, extra, links = [], [], []
for line in sys.stdin:
    key, _, val = line.strip().partition("=")
    dest = {"index-url": main, "extra-index-url": extra, "find-links": links}.get(key.rsplit(".", 1)[-1])
    if dest is None:
        continue
    try:
        words = [w for v in shlex.split(val) for w in v.split()]
    except ValueError:
        continue
    dest.extend(w for w in words if w not in dest)
idx = main + [u for u in extra if u not in main]
for i, u in enumerate(idx):
    print(("--index-url=" if i == 0 else "--extra-index-url=") + u)
for f in links:
    print("--find-links=" + f)
')
log "pip sources: ${SOURCES[*]:-pip defaults (none configured)}"
# pip warns once per package for every file:// index that lacks it: noise, filtered out
quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
pipi() { "$PY" -m pip install --disable-pip-version-check --no-input --quiet "${SOURCES[@]}" "$@" 2> >(quiet); }

t0=$(date +%s)
if [ "$NO_DEPS" = 1 ]; then
  pipi --no-deps "$TORCH_REQ"
  # torch's own requirements, markers evaluated here (extras excluded)
  mapfile -t REQS < <("$PY" -c '
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
for r in requires("torch") or []:
    q = Requirement(r)
    if q.marker is None or q.marker.evaluate({"extra": ""}):
        print(r.split(";")[0].strip())
')
  have=()
  for r in "${REQS[@]}"; do
    if out=$("$PY" -m pip install --disable-pip-version-check --no-input --quiet --dry-run --no-deps "${SOURCES[@]}" "$r" 2>&1); then
      have+=("$r")
    elif grep -qE "No matching distribution|Could not find a version" <<<"$out"; then
      log "left out $r: no configured index offers it"
    else
      log "pip failed on $r:"; echo "$out" >&2; exit 1
    fi
  done
  pipi "${have[@]}" "${EXTRAS[@]}"
  [ ${#have[@]} -eq ${#REQS[@]} ] || log "(pip's resolver note about what was left out, if any above, is expected)"
else
  pipi "$TORCH_REQ" "${EXTRAS[@]}"
fi
t1=$(date +%s)

"$PY" -c 'import torch, numpy, safetensors, tensorboard' || { log "the new venv does not import torch, numpy, safetensors, tensorboard"; exit 1; }
ver=$("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')
size=$(du -sh "$VENV" | cut -f1)
done_at=$(date +%s)
summary="torch $ver, $size, made in $((done_at - start)) s (pip install $((t1 - t0)) s) on $(date -u +%FT%TZ)"
printf '%s\n%s\n' "$WANT" "$summary" > "$STAMP"
log "$VENV: $summary"
echo "$PY"
