# One image for every process; docker-compose.yml picks the bin/ script per service.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/venv PATH=/venv/bin:$PATH
RUN pip install --no-cache-dir uv
WORKDIR /srv
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput
# var/flower: the app user's, so the volume docker-compose.yml mounts there is too.
RUN useradd --system --uid 1000 app && mkdir -p var/flower && chown -R app /srv
USER app
