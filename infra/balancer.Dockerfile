# The balancer image (chlb-balancer). Build context: the repository root.
#   docker build -f infra/balancer.Dockerfile -t chlb-balancer:latest .
# Offline (no registry, no package index; see infra/docker/up-offline.sh):
#   docker build -f infra/balancer.Dockerfile -t chlb-balancer:latest \
#     --build-arg BASE=chlb-base:offline --build-arg PIP_ARGS="--no-index --find-links /wheels" .
# One balancer instance; settings come from LB_* variables (see docker-compose.yml).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG PIP_ARGS=""
RUN python3 -m venv /opt/venv
# Empty (.gitkeep) unless infra/docker/build-wheelhouse.sh filled it for the offline build.
COPY infra/docker/wheels /wheels
COPY pyproject.toml README.md /src/
COPY balancer /src/balancer
COPY server /src/server
COPY loadgen /src/loadgen
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} /src

FROM ${BASE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
EXPOSE 5555
CMD ["/opt/venv/bin/lb-balancer", "--host", "0.0.0.0", "--port", "5555"]
