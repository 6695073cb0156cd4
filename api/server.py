"""The app each uvicorn worker serves, built from the environment (the CLI sets MONETA_CONFIG)."""
from __future__ import annotations

from fastapi import FastAPI

from moneta.api.app import create_app
from moneta.bootstrap import build_proxy, environment, load_gateway_config


def app_from_environment() -> FastAPI:
    environ = environment()
    return create_app(build_proxy(load_gateway_config(None, environ), environ))
