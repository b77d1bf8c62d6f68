# One image for every smsbulk process: worker, api, flower and sandbox
# (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY producer ./producer
COPY worker ./worker
RUN pip install '.[flower]' && rm -rf /app/build

# Provider accounts are mounted read-only at /config; secrets come from the
# environment, never from the image.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin smsbulk
USER smsbulk
WORKDIR /home/smsbulk

EXPOSE 8080 5555 8025 9808
CMD ["smsbulk", "worker", "--loglevel=INFO"]
