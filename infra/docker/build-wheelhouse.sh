#!/usr/bin/env bash
# Fill infra/docker/wheels/ with wheels of every runtime dependency of the project (read from
# pyproject.toml, so it follows the dependency list) plus the build backend, so the images can
# `pip install --no-index --find-links /wheels` with no package index in reach.
#
#   infra/docker/build-wheelhouse.sh            # no-op when nothing it depends on changed
#   FORCE=1 infra/docker/build-wheelhouse.sh    # rebuild
#
# Resolved and built by this machine's Debian python3 (/usr/bin/python3, in a venv under the cache
# dir), which is the very interpreter of the offline base (same suite, same mirror): cp311 wheels
# for the same glibc, and environment markers evaluated for the same version. That matters:
# redis needs async-timeout only on python < 3.11.3, and bookworm's python3 is 3.11.2, so a
# wheelhouse resolved by another 3.11 (pyenv's 3.11.7, say) misses it. PYTHON= picks another
# interpreter (it must match the image's Python).
#
# The project's own wheel is left out on purpose: the Dockerfiles install the source they copy,
# so an image always has the working tree's code, never a stale wheel of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

OUT=infra/docker/wheels
STAMP="$OUT/.stamp"
FORCE="${FORCE:-0}"
CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chlb}"

say() { printf 'build-wheelhouse: %s\n' "$*" >&2; }

if [ -z "${PYTHON:-}" ]; then
  # Debian's python3 with venv support (python3-venv), in a venv of its own.
  if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then
    say "installing python3-venv (Debian's python3 builds the wheelhouse)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
      python3 python3-venv)
    $SUDO "${install[@]}" >/dev/null || { $SUDO apt-get update -q && $SUDO "${install[@]}"; }
  fi
  venv="$CACHE_DIR/wheel-venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  PYTHON="$venv/bin/python"
fi

pyver="$("$PYTHON" -c 'import platform; print(platform.python_version())')"
case "$pyver" in
  3.11.*) ;;
  *)
    say "$PYTHON is Python $pyver; the images run 3.11, so the wheels must be cp311 (set PYTHON=)"
    exit 1
    ;;
esac

# The build backend pinned in [build-system] is needed to build the project inside the image.
build_requires="$("$PYTHON" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
EOF
)"
want="$( (sha256sum pyproject.toml; echo "$pyver"; uname -m) | sha256sum | cut -c1-16)"
if [ "$FORCE" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  say "$OUT is up to date with pyproject.toml (FORCE=1 rebuilds it)"
  exit 0
fi

started=$SECONDS
mkdir -p "$OUT"
rm -f "$OUT"/*.whl "$STAMP"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A copy of just what the project's metadata needs, so pip builds no stray files into a wheel.
cp pyproject.toml README.md "$work/"
for pkg in balancer server loadgen; do cp -r "$pkg" "$work/"; done
find "$work" -name __pycache__ -prune -exec rm -rf {} +

# shellcheck disable=SC2086  # build_requires is a newline-separated list of requirements
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$OUT" \
  "$work" $build_requires
rm -f "$OUT"/chlb-*.whl
echo "$want" >"$STAMP"
say "$(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1)) in $((SECONDS - started))s"
