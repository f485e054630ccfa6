"""Settings for the example app; everything deploy-specific comes from env vars.

Env vars: EXAMPLE_DB_NAME (+ EXAMPLE_DB_HOST/PORT/USER/PASSWORD) selects
MySQL/MariaDB via PyMySQL, otherwise sqlite in EXAMPLE_DATA_DIR (default: the
checkout). STATIC_ROOT, CELERY_BROKER_URL, EXAMPLE_CELERY_QUEUE and BLUEGREEN_COLOR
are also read.
"""

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "dev-only-example-secret-key-not-for-production"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "exampleapp.apps.ExampleAppConfig",
]

# Outermost, so the identity headers also land on 404/500 responses.
MIDDLEWARE = ["exampleapp.middleware.BluegreenHeadersMiddleware"]

ROOT_URLCONF = "exampleapp.urls"
WSGI_APPLICATION = "exampleapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {"context_processors": []},
    }
]


def _database() -> dict[str, Any]:
    """Pick MySQL/MariaDB when EXAMPLE_DB_NAME is set, else a sqlite file."""
    name = os.environ.get("EXAMPLE_DB_NAME")
    if name:
        import pymysql

        pymysql.install_as_MySQLdb()
        # Django checks the mysqlclient version; present PyMySQL as new enough.
        if pymysql.version_info < (2, 2, 1):
            pymysql.version_info = (2, 2, 1, "final", 0)
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": name,
            "HOST": os.environ.get("EXAMPLE_DB_HOST", "127.0.0.1"),
            "PORT": os.environ.get("EXAMPLE_DB_PORT", "3306"),
            "USER": os.environ.get("EXAMPLE_DB_USER", "root"),
            "PASSWORD": os.environ.get("EXAMPLE_DB_PASSWORD", ""),
            "OPTIONS": {"charset": "utf8mb4", "connect_timeout": 5},
        }
    data_dir = Path(os.environ.get("EXAMPLE_DATA_DIR") or BASE_DIR)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": data_dir / "db.sqlite3",
        # Web workers and Celery workers of both colors may share the file.
        "OPTIONS": {"timeout": 20},
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticroot")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "exampleapp.storage.ForgivingManifestStaticFilesStorage"},
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# One queue per deployment (the tests run several side by side on one broker).
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("EXAMPLE_CELERY_QUEUE", "celery")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
}
