"""Queues, routes, Celery settings and Redis connections (embedded Redis included)."""
