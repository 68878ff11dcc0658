FROM python:3.11-slim-bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dovecot-imapd nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/piper
COPY pyproject.toml package.json package-lock.json ./
COPY app ./app
COPY executor ./executor
COPY sql ./sql
RUN pip install --no-cache-dir . \
 && npm ci --no-audit --no-fund --silent \
 && mkdir -p app/static/vendor \
 && cp node_modules/htmx.org/dist/htmx.min.js app/static/vendor/ \
 && cp node_modules/htmx-ext-sse/dist/sse.js app/static/vendor/ \
 && rm -rf node_modules \
 && pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["uvicorn", "app.web.main:app", "--host", "0.0.0.0", "--port", "8000"]
