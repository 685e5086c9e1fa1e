#!/usr/bin/env bash
# Deploy the Swarm stack (infra/swarm/stack.yml) with nothing pulled from a registry or a
# package index: makes sure dockerd runs and is a swarm manager, builds the images offline if
# they are missing, copies them to the other nodes (`docker save | docker load`), and runs
# `docker stack deploy`. Idempotent: run it again after a change to roll the balancers.
#
#   infra/swarm/deploy.sh                       # stack "chlb" on this node's swarm
#   STACK=chlb2 LB_PORT=6555 infra/swarm/deploy.sh
#   NODE_HOSTS="ssh://me@host2 ssh://me@host3" infra/swarm/deploy.sh   # images to other nodes
#   docker stack rm chlb                        # remove it (the balancers stop their replicas)
#
# Environment (besides the stack file's own settings, see its header):
#   STACK                 stack name (default chlb)
#   NODE_HOSTS            DOCKER_HOST of every other node, to load the images there
#   SWARM_ADVERTISE_ADDR  address for `docker swarm init` when this node is in no swarm
#                         (default 127.0.0.1: a single-node swarm)
#   OBSERVABILITY         1: also deploy infra/swarm/observability.yml (needs the Prometheus
#                         and Grafana images loaded; offline there is no registry to pull from)
#   DEPLOY_WAIT_S         how long to wait for the balancer tasks to run (default 120)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"
STACK="${STACK:-chlb}"
WAIT_S="${DEPLOY_WAIT_S:-120}"
IMAGES=(chlb-server:latest chlb-balancer:latest chlb-base:offline)

say() { printf 'swarm-deploy: %s\n' "$*" >&2; }

# --- 1. daemon, swarm, images --------------------------------------------------------------
infra/docker/ensure-docker.sh
case "$(docker info --format '{{.Swarm.LocalNodeState}}')" in
  active) ;;
  inactive)
    say "docker swarm init --advertise-addr ${SWARM_ADVERTISE_ADDR:-127.0.0.1}"
    docker swarm init --advertise-addr "${SWARM_ADVERTISE_ADDR:-127.0.0.1}" >/dev/null
    ;;
  *)
    say "this node's swarm state is $(docker info --format '{{.Swarm.LocalNodeState}}'); fix it first"
    exit 1
    ;;
esac
if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]; then
  say "this node is not a swarm manager: run the deploy on a manager"
  exit 1
fi
for image in "${IMAGES[@]}"; do
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    say "image $image missing: building the images offline"
    OFFLINE=1 infra/docker/build-images.sh
    break
  fi
done
# Swarm has no registry here: every node needs the images under the same tags.
for host in ${NODE_HOSTS:-}; do
  say "loading ${IMAGES[*]} on $host"
  docker save "${IMAGES[@]}" | DOCKER_HOST="$host" docker load -q
done

# --- 2. token, stack -----------------------------------------------------------------------
set -a
# shellcheck disable=SC1091  # plain KEY="value" lines: REDIS_IMAGE=chlb-base:offline
. infra/docker/offline.env
set +a
infra/docker/ensure-token.sh
if [ -z "${LB_ADMIN_TOKEN:-}" ]; then
  LB_ADMIN_TOKEN="$(sed -n 's/^LB_ADMIN_TOKEN=//p' .env | tail -n 1)"
fi
# The token reaches the balancers as a Swarm secret made from this file (stack.yml), never
# through their environment; the file lives only as long as this script.
if [ -z "${CHLB_ADMIN_TOKEN_FILE:-}" ]; then
  CHLB_ADMIN_TOKEN_FILE="$(umask 077 && mktemp)"
  trap 'rm -f "$CHLB_ADMIN_TOKEN_FILE"' EXIT
  printf '%s' "$LB_ADMIN_TOKEN" >"$CHLB_ADMIN_TOKEN_FILE"
fi
export CHLB_ADMIN_TOKEN_FILE
files=(-c infra/swarm/stack.yml)
[ "${OBSERVABILITY:-0}" = 1 ] && files+=(-c infra/swarm/observability.yml)
say "docker stack deploy ${files[*]} $STACK"
# --resolve-image never: the images are local, with no registry digest to look up.
docker stack deploy --resolve-image never "${files[@]}" "$STACK"

# --- 3. wait for the balancers -------------------------------------------------------------
want="$(docker service inspect "${STACK}_balancer" --format '{{.Spec.Mode.Replicated.Replicas}}')"
deadline=$((SECONDS + WAIT_S))
until [ "$(docker service ps "${STACK}_balancer" --filter desired-state=running \
  --format '{{.CurrentState}}' | grep -c '^Running')" -ge "$want" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "the balancer tasks did not all run within ${WAIT_S}s:"
    docker service ps --no-trunc "${STACK}_balancer" >&2
    exit 1
  fi
  sleep 1
done
docker stack services "$STACK"
say "deployed: the balancers answer on port ${LB_PORT:-5555} of every node (routing mesh)"
