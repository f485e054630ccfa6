"""Zero-downtime blue/green deploys for web apps run under supervisord behind nginx."""

__version__ = "0.1.0"
