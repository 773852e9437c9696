# One image for web, worker and beat; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/data

WORKDIR /app
COPY requirements.txt .
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install -r requirements.txt

COPY . .
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /data /models \
    && chown app:app /data /models \
    && SECRET_KEY=build-only DEBUG=true python manage.py collectstatic --noinput -v0
USER app

EXPOSE 5000
CMD ["gunicorn", "rlagent_project.wsgi", "--config", "deploy/gunicorn.conf.py"]
