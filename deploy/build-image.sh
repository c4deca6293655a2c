#!/usr/bin/env bash
# deploy/build-image.sh TAG DOCKERFILE CONTEXT [docker build options, e.g. --build-arg K=V]
#
# `docker build` of one pitrdrill image, skipped when nothing it is made of changed: the image
# carries a label with the hash of its recipe (the Dockerfile, every file of the context with
# its mode, the build options, and the ids of the local images it is built FROM), and an image
# with that tag and that label is up to date. Set FORCE=1 to build anyway.
set -euo pipefail
tag=$1 dockerfile=$2 context=$3
shift 3

from_ids=""
for image in $(awk 'toupper($1) == "FROM" { print $2 }' "$dockerfile" | sort -u); do
  # A stage name is not an image; an image that is missing fails the build below, loudly.
  from_ids+="$image=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true) "
done
recipe=$({
  cat "$dockerfile"
  printf '%s\n' "$@" "$from_ids"
  (cd "$context" && find . -type f -printf '%m %p\n' | LC_ALL=C sort \
     && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
} | sha256sum | cut -c1-16)

have=$(docker image inspect -f '{{index .Config.Labels "org.pitrdrill.recipe"}}' "$tag" 2>/dev/null || true)
if [ "$have" = "$recipe" ] && [ -z "${FORCE:-}" ]; then
  echo "$tag: up to date (recipe $recipe)"
  exit 0
fi
echo "$tag: building from $dockerfile"
old_id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
started=$SECONDS
# The classic builder: this Docker Engine (20.10) has no buildx plugin beside it.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! DOCKER_BUILDKIT=0 docker build --label "org.pitrdrill.recipe=$recipe" --tag "$tag" \
       --file "$dockerfile" "$@" "$context" >"$log" 2>&1; then
  tail -60 "$log" >&2
  echo "$tag: build failed (the last lines of its log are above)" >&2
  exit 1
fi
# The image this one replaces would stay behind untagged: remove it (not when still in use).
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
# So do the images of its earlier builds' intermediate stages (labelled
# org.pitrdrill.stage-of=TAG): the newest is kept, the next build's cache.
docker images --filter dangling=true --filter "label=org.pitrdrill.stage-of=$tag" \
    --format '{{.CreatedAt}}|{{.ID}}' | LC_ALL=C sort -r | tail -n +2 | cut -d'|' -f2 \
  | xargs -r docker image rm >/dev/null 2>&1 || true
size=$(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')
echo "$tag: built in $((SECONDS - started)) s ($size)"
