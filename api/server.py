"""Builds the served application from the environment (the CLI sets MONETA_CONFIG for workers)."""
from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from application.bootstrap import build, environment, load_gateway_config


def app_from_environment() -> FastAPI:
    environ = environment()
    container = build(load_gateway_config(None, environ), environ)
    return create_app(container)
