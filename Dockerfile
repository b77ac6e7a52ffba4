# One image for every Easel process: `easel api` (default), `easel runner`, `easel topics`, ...
# torch from PyPI is the CUDA build, so the same image serves GPU runners (with the NVIDIA container toolkit).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The pinned dependencies first, in their own layer: torch is large and changes rarely.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md ./
COPY contract ./contract
COPY service ./service
COPY consumers ./consumers
COPY producers ./producers
COPY gpu_runner ./gpu_runner
COPY easel ./easel
RUN pip install --no-deps . && rm -rf build *.egg-info

# Named volumes mounted on these paths start with the image's owner, so the non-root user can write them.
RUN useradd --create-home --uid 1000 easel \
    && mkdir -p /data/.easel /data/blobs /data/hf \
    && chown -R easel:easel /data
USER easel
WORKDIR /data
ENV EASEL_HOME=/data/.easel \
    HF_HOME=/data/hf

EXPOSE 8000
ENTRYPOINT ["easel"]
CMD ["api"]
