#!/usr/bin/env bash
# Remove the Swarm stack and the replica services its balancers started.
#
#   infra/swarm/remove.sh                 # stack "chlb", replicas labelled chlb.deployment=chlb
#   STACK=chlb2 LB_SWARM_DEPLOYMENT=chlb2 LB_SWARM_NETWORK=chlb2-replicas infra/swarm/remove.sh
#
# `docker stack rm` stops every balancer task at once. The last balancer out stops the replicas,
# but when they all stop together none is last (each still sees the others), so they leave the
# replica services running, as they would for a rolling update. This script waits (bounded) for
# the balancers to finish, removes the replica services that are left (by their deployment
# label), then removes the networks (the first `stack rm` cannot remove the replicas' network
# while replica services are attached to it). Redis's volumes stay (docker volume rm them).
set -euo pipefail
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"
STACK="${STACK:-chlb}"
DEPLOYMENT="${LB_SWARM_DEPLOYMENT:-chlb}"
NETWORK="${LB_SWARM_NETWORK:-chlb-replicas}"
WAIT_S="${REMOVE_WAIT_S:-60}"

say() { printf 'swarm-remove: %s\n' "$*" >&2; }

docker stack rm "$STACK" >/dev/null 2>&1 || true
deadline=$((SECONDS + WAIT_S))
while [ -n "$(docker ps -q --filter "label=com.docker.stack.namespace=$STACK")" ]; do
  [ "$SECONDS" -ge "$deadline" ] && { say "stack tasks still running after ${WAIT_S}s"; break; }
  sleep 1
done
left="$(docker service ls -q --filter "label=chlb.deployment=$DEPLOYMENT")"
if [ -n "$left" ]; then
  say "removing replica services the balancers left: $(echo "$left" | wc -l)"
  # shellcheck disable=SC2086  # one id per word
  docker service rm $left >/dev/null
fi
# The networks go once the tasks' endpoints have left them.
networks() {
  docker network ls -q --filter "label=com.docker.stack.namespace=$STACK"
  docker network ls -q --filter "name=^${NETWORK}\$"
}
while [ -n "$(networks)" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "networks of $STACK still in use after ${WAIT_S}s"
    exit 1
  fi
  docker stack rm "$STACK" >/dev/null 2>&1 || true
  # shellcheck disable=SC2046  # one id per word
  docker network rm $(networks) >/dev/null 2>&1 || true
  sleep 1
done
say "stack $STACK removed"
