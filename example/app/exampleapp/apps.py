"""App config for the example app."""

from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """Registers the models and migrations under the label ``exampleapp``."""

    name = "exampleapp"
    default_auto_field = "django.db.models.BigAutoField"
