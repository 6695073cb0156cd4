"""Builds the served application from the environment (the CLI sets MONETA_CONFIG for workers)."""
from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from api.read_side import ReadSide
from application.bootstrap import build, environment, load_gateway_config


def app_from_environment() -> FastAPI:
    environ = environment()
    container = build(load_gateway_config(None, environ), environ)
    read_side = ReadSide(container.location)  # type: ignore[arg-type]
    return create_app(container, background=[read_side], views=read_side.queries)
