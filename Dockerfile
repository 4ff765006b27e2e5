# syntax=docker/dockerfile:1
# rayprism on Ray's own image: one image for the service (KubeRay RayService) and for batch
# embedding and training (RayJob), referenced by the Helm chart's image.repository / image.tag.
#
#   CPU:  docker build -t <registry>/rayprism:0.1.0 .
#   GPU:  docker build -t <registry>/rayprism:0.1.0-gpu \
#           --build-arg RAY_VARIANT=py311-cu128 \
#           --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#           --build-arg EXTRAS=vllm .
#
# Every Ray node of a cluster must run the same Ray and Python: keep RAY_VERSION equal to the
# ray pin in pyproject.toml and use one RAY_VERSION for the CPU and the GPU image.
ARG RAY_VERSION=2.60.0
ARG RAY_VARIANT=py311
FROM rayproject/ray:${RAY_VERSION}-${RAY_VARIANT}

ARG RAY_VERSION
# torch first, from the index that matches the base image (CPU or a CUDA build), so that no later
# dependency pulls a different build. With EXTRAS=vllm, set it to the torch version vllm pins.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Extras of the rayprism package, comma-separated (vllm for the GPU image).
ARG EXTRAS=""

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The base image's user `ray` (uid 1000, group users 100), by number so that Kubernetes'
# runAsNonRoot can check it: Ray and pip run as it, never as root.
USER 1000:100
WORKDIR /home/ray/rayprism

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 rayprism ./rayprism
# The package and its extras (versions pinned by pyproject.toml); the checks fail the build when
# an extra did not install or when a dependency moved Ray off the base image's version.
# hadolint ignore=DL3013
RUN pip install ".${EXTRAS:+[${EXTRAS}]}" \
 && case ",${EXTRAS}," in *,vllm,*) python -c "import vllm" ;; *) ;; esac \
 && python -c "import ray, rayprism.cli; assert ray.__version__ == '${RAY_VERSION}', ray.__version__" \
 && rayprism --help > /dev/null

# Config files, the example data and the docs (the serve config's seed) beside the package:
# job files mounted by the chart under configs/ find ../examples/data and serve-gpu.yaml here.
COPY --chown=1000:100 configs ./configs
COPY --chown=1000:100 examples ./examples
COPY --chown=1000:100 docs ./docs

# 8000: the service (Ray Serve); 8265: Ray dashboard and Jobs API; 6379: GCS; 10001: Ray client.
EXPOSE 8000 8265 6379 10001

# On its own (docker run -p 8000:8000 ...) the image serves the default config; in Kubernetes,
# KubeRay replaces the command with `ray start` and Serve runs what the RayService names.
CMD ["rayprism", "serve", "configs/serve.yaml", "--host", "0.0.0.0"]
