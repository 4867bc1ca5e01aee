# syntax=docker/dockerfile:1
# The operator image: `sovereign run` (kopf + the Kubernetes clients), nothing else.
#
# Two stages: the first builds wheels for the project and all its dependencies (with pip's
# hash-checked resolver and build tools), the second installs only those wheels into a slim
# Python, so no compiler, cache or source tree ships. The base is pinned by digest; pass it
# (there is no default on purpose, so a moved tag can never change what runs):
#
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
#   docker build -f docker/operator.Dockerfile \
#     --build-arg PYTHON_DIGEST=sha256:<that digest> -t REGISTRY/sovereign-operator:0.1.0 .
#
# The chart runs it as user 65532 with a read-only root filesystem and /tmp as an emptyDir.
ARG PYTHON_IMAGE=python
ARG PYTHON_TAG=3.11-slim-bookworm
ARG PYTHON_DIGEST

FROM ${PYTHON_IMAGE}:${PYTHON_TAG}@${PYTHON_DIGEST} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY worker ./worker
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}:${PYTHON_TAG}@${PYTHON_DIGEST}
# No .pyc writes into the read-only filesystem; logs reach `kubectl logs` unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels sovereign-operator \
 && rm -rf /wheels
# Numeric, so the kubelet can enforce runAsNonRoot without /etc/passwd; installed files stay
# root-owned and read-only to the operator.
USER 65532:65532
ENTRYPOINT ["sovereign"]
CMD ["run", "--all-namespaces"]
