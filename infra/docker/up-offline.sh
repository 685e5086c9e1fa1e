#!/usr/bin/env bash
# The Docker deployment with nothing pulled from a registry or a package index: makes sure dockerd
# runs, builds chlb-base:offline (debootstrap from this machine's apt mirror; it is also the Redis
# image), the wheelhouse, the images, then `docker-compose up -d`.
#
#   infra/docker/up-offline.sh                # make up-offline
#   docker-compose down --remove-orphans      # make down
#
# Extra arguments go to `docker-compose up -d` (e.g. service names).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"
set -a
# shellcheck disable=SC1091  # plain KEY="value" lines
. infra/docker/offline.env
set +a
OFFLINE=1 infra/docker/build-images.sh
infra/docker/ensure-token.sh
docker-compose up -d "$@"
docker-compose ps
