#!/usr/bin/env bash
# The compose deployment's admin token: docker-compose.yml refuses to start without one (a
# default in the file would be a public password). Unless LB_ADMIN_TOKEN is set, or already in
# .env (which docker-compose reads), write a random one there, readable by its owner only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ -n "${LB_ADMIN_TOKEN+set}" ] || grep -qs '^LB_ADMIN_TOKEN=' .env; then
  exit 0
fi
umask 077
token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
printf 'LB_ADMIN_TOKEN=%s\n' "$token" >> .env
echo "admin token written to .env (LB_ADMIN_TOKEN): send it as 'Authorization: Bearer <token>'" >&2
