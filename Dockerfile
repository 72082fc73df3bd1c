# Same commands as the Makefile: install from the lock file, migrate, serve.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PLUMBLINE_HOST=0.0.0.0 PLUMBLINE_PORT=8000 PLUMBLINE_DATA_DIR=/data \
    PLUMBLINE_DATABASE_URL=sqlite:////data/plumbline.db
WORKDIR /srv/plumbline
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml setup.py README.md alembic.ini ./
COPY app ./app
COPY plumbline ./plumbline
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
# A regular install: the wheel carries templates/, static/ and migrations/ (setup.py).
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 plumbline && mkdir -p /data && chown plumbline /data
USER plumbline
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["plumbline", "serve"]
