"""The import rules between the layers (ARCHITECTURE.md), checked on the source itself."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("domain", "application", "infrastructure", "projections", "api")
PACKAGE = "moneta"  # the composition root and the library, beside the layers: may import them all
# What each layer may import from the project's own layers and from I/O-ish libraries.
ALLOWED_LAYERS = {
    "domain": {"domain"},
    "application": {"domain", "application"},
    "infrastructure": {"domain", "application", "infrastructure"},
    "projections": {"domain", "projections"},
    "api": set(LAYERS) | {PACKAGE},
    PACKAGE: set(LAYERS) | {PACKAGE},
}
FORBIDDEN_LIBRARIES = {
    "domain": {"fastapi", "starlette", "httpx", "aiohttp", "psycopg", "redis", "sqlite3", "requests", "uvicorn",
               "apscheduler", "os", "socket", "asyncio", "yaml", "tiktoken", "genai_prices"},
    "application": {"fastapi", "starlette", "psycopg", "redis", "uvicorn", "aiohttp", "httpx", "sqlite3"},
}


def _imports(path: Path) -> set[str]:
    """The top-level names a file imports, a layer counting by its own name (moneta.domain -> domain)."""
    tree = ast.parse(path.read_text(), str(path))
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return {_top_level(module) for module in modules}


def _top_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in LAYERS else parts[0]


def _sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", (*LAYERS, PACKAGE))
def test_layer_imports_only_what_it_may(layer):
    for path in _sources(layer):
        allowed = ALLOWED_LAYERS[layer]
        imported = _imports(path)
        wrong_layers = (imported & set(LAYERS)) - allowed
        wrong_libraries = imported & FORBIDDEN_LIBRARIES.get(layer, set())
        assert not wrong_layers, f"{path.relative_to(ROOT)} imports {sorted(wrong_layers)}"
        assert not wrong_libraries, f"{path.relative_to(ROOT)} imports {sorted(wrong_libraries)}"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom moneta.infrastructure.event_store import migrate\nimport moneta.api.app\n")
    assert _imports(bad) == {"os", "infrastructure", "api"}


def _reads_environment(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            return True
    return False


def test_only_the_composition_root_touches_the_environment():
    # The CLI writes MONETA_CONFIG for the worker processes it starts; nothing else may look.
    touching = {p.relative_to(ROOT) for layer in (*LAYERS, PACKAGE) for p in _sources(layer) if _reads_environment(p)}
    assert touching == {Path("moneta/bootstrap.py"), Path("api/cli.py")}
