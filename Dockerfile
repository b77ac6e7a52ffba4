# One image for every Easel process: `easel api` (default), `easel runner`, `easel webhooks`, `easel topics`, ...
# torch from PyPI is the CUDA build, so the same image serves GPU runners (with the NVIDIA container toolkit).

# The project as a wheel, built from the whole checkout: pyproject.toml alone says which packages and data
# files ship (tests/test_packaging.py installs the same wheel and imports every module). .dockerignore keeps
# local state (.venv, .easel, .git) and the tests out of the context.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The pinned dependencies first, in their own layer: torch is large and changes rarely.
COPY requirements.lock /tmp/requirements.lock
RUN pip install -r /tmp/requirements.lock && rm /tmp/requirements.lock

# Then Easel itself, without dependencies: the lock above pinned them all.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

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
