"""Gunicorn settings shared by `make run` and docker-compose; PORT and WEB_CONCURRENCY from env."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 60
accesslog = "-"
