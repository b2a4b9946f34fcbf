# bids_infantseg BIDS App: QuickNAT segmentation of first-year infant T2w MRI.
#
#   docker build -t infantseg .                                   # CUDA torch (--gpus all)
#   docker build --build-arg TORCH=cpu -t infantseg:cpu .         # CPU-only torch, GBs smaller
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v /bids:/bids:ro -v /out:/out
#       infantseg /bids /out participant     # --user: uid 1000 cannot write a root-owned /out
#
# Build arguments:
#   BASE_IMAGE       any Debian image; python3 (>= 3.11) is installed with apt if it lacks one
#   TORCH            cuda (PyPI's default Linux wheel, CUDA runtime bundled) or cpu
#   TORCH_VERSION    the torch release to install
#   TORCH_CPU_INDEX  where CPU-only wheels come from (PyTorch's index by default)
#   PIP_FIND_LINKS   optional extra wheel location (an offline mirror), passed to pip
#   FETCH_TEMPLATES  1: download the MNIInfant templates into the image (needs TemplateFlow's
#                    S3); 0: skip, and --pose-normalize fails with a one-line error
#   VERSION, VCS_REF, BUILD_DATE   OCI labels
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment and a TemplateFlow home, copied whole into the runtime ----
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian bases without Python (e.g. debian:bookworm-slim) get Debian's python3 (3.11 on
# bookworm); versions are not pinned because Debian stable only ships security fixes.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG TORCH=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
RUN case "$TORCH" in \
        cuda) pip install "torch==${TORCH_VERSION}" ;; \
        cpu) pip install --index-url "$TORCH_CPU_INDEX" "torch==${TORCH_VERSION}+cpu" ;; \
        *) echo "TORCH must be cuda or cpu, not '$TORCH'" >&2; exit 1 ;; \
    esac

# Dependencies before the package's code, so that editing the code reuses this layer.
COPY setup.cfg /tmp/src/setup.cfg
RUN python3 -c 'import configparser as c; p = c.ConfigParser(); p.read("/tmp/src/setup.cfg"); \
print(p["options"]["install_requires"])' > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY pyproject.toml setup.cfg README.md /tmp/src/
COPY bids_infantseg /tmp/src/bids_infantseg
RUN pip install --no-deps /tmp/src \
    && bids_infantseg --version

ARG FETCH_TEMPLATES=1
ENV TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0
COPY scripts/fetch_templates.py /tmp/fetch_templates.py
RUN if [ "$FETCH_TEMPLATES" = 1 ]; then python3 /tmp/fetch_templates.py; \
    else python3 /tmp/fetch_templates.py --skeleton-only; fi \
    && chmod -R a+rX /opt/templateflow

# ---- runtime: Python, the venv and the templates; no pip caches, no apt lists ----
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/infantseg infantseg \
    && chmod 1777 /home/infantseg

COPY --from=build /opt/templateflow /opt/templateflow
COPY --from=build /opt/venv /opt/venv

# Any --user (no passwd entry, no home of its own) must work, and so must a read-only root
# filesystem with a tmpfs on /tmp: caches go to /tmp, nothing is fetched at run time.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/infantseg \
    USER=infantseg \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton \
    CUDA_CACHE_PATH=/tmp/nv-compute-cache \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    NIPYPE_NO_ET=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
ARG TORCH=cuda
LABEL org.opencontainers.image.title="bids_infantseg" \
      org.opencontainers.image.description="BIDS App: QuickNAT segmentation of first-year infant T2w brain MRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="https://github.com/bids-infantseg/bids_infantseg" \
      org.opencontainers.image.url="https://github.com/bids-infantseg/bids_infantseg" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.bids-infantseg.torch="${TORCH}"

USER 1000:1000
WORKDIR /home/infantseg
ENTRYPOINT ["bids_infantseg"]
