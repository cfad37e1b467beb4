# Two images from one file:
#   worker  - slim: onnxruntime, celery, redis, Pillow; no torch, and no trainer or exporter
#             code (docker/worker-only.py removes them after the install)
#   trainer - everything, for `docker compose --profile train run train`
# Both install one wheel built in a stage of its own (`wheel`), the only one with a compiler.
FROM python:3.11-slim AS base
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml setup.py README.md LICENSE ./
COPY digitscan ./digitscan
COPY trainer ./trainer
COPY export ./export
COPY worker ./worker
COPY docker ./docker

# The wheel, with the cell cleanup's rule search compiled (worker/_cleanup.c): the images
# install it and carry no compiler (without one, pip would build the slower reference only).
FROM base AS wheel
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* && pip wheel --no-deps --wheel-dir /wheels .

FROM base AS worker
# Workers that read inputs by reference from object storage (s3://, gs://) need the storage
# extra too: docker build --build-arg WORKER_EXTRAS=worker,storage --target worker .
ARG WORKER_EXTRAS=worker
COPY --from=wheel /wheels /wheels
RUN pip install "$(ls /wheels/digitscan-*.whl)[${WORKER_EXTRAS}]" && python docker/worker-only.py \
    && python -P -c "from digitscan.worker.imaging import COMPILED; assert COMPILED" \
    && rm -rf /wheels && useradd --uid 1000 --no-create-home digitscan
USER digitscan
ENV DIGITSCAN_MODEL=/models/digits.onnx
ENTRYPOINT []
CMD ["digitscan", "worker"]

FROM base AS trainer
# The typefaces the trainer renders printed digits and non-digit cells from.
COPY --from=wheel /wheels /wheels
RUN apt-get update && grep -v '^#' docker/fonts.txt | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* && pip install "$(ls /wheels/digitscan-*.whl)[all]" \
    && rm -rf /wheels
CMD ["digitscan", "--help"]
