"""celeryctl: the diagnostic command line for Celery operators."""

__version__ = "0.1.0"
