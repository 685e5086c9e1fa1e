#!/usr/bin/env bash
# Build chlb-server:latest and chlb-balancer:latest (the compose services' images).
#
#   infra/docker/build-images.sh              # the normal way: FROM python:3.11-slim, pip from PyPI
#   OFFLINE=1 infra/docker/build-images.sh    # no registry, no index: starts the daemon if needed,
#                                             # builds chlb-base:offline and the wheelhouse first
#
# Extra arguments go to `docker-compose build` (e.g. --no-cache, or a service name).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"

if [ "${OFFLINE:-0}" = 1 ]; then
  set -a
  # shellcheck disable=SC1091  # plain KEY="value" lines
  . infra/docker/offline.env
  set +a
  infra/docker/ensure-docker.sh
  infra/docker/build-offline-base.sh
  infra/docker/build-wheelhouse.sh
fi
# server-image, lb1 and lb2 are the services with a build; lb2's build is a cache hit of lb1's.
# A build needs no admin token, but compose interpolates the whole file (the token has no default).
LB_ADMIN_TOKEN=${LB_ADMIN_TOKEN-unused-by-a-build} docker-compose build --force-rm "$@"
