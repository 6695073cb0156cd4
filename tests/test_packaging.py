"""The distribution installs one import name, `moneta`, which is also the library."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_only_the_moneta_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("moneta_gateway-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"moneta"}
    for layer in ("domain", "application", "infrastructure", "projections", "api"):
        assert f"moneta/{layer}/__init__.py" in names
    assert "moneta/infrastructure/tiktoken_data/cl100k_base.tiktoken" in names
    assert "moneta/api/routes/openai.py" in names


def test_import_moneta_as_litellm_runs_basic_code(tmp_path):
    code = (
        "import moneta as litellm\n"
        "r = litellm.completion(model='mock/demo', messages=[{'role': 'user', 'content': 'hi'}],"
        " mock_response='hello')\n"
        "print(r.choices[0].message.content)\n"
        "print(litellm.token_counter(model='gpt-4o', text='hello world'))\n"
        "print(type(litellm.completion_cost(r, model='mock/demo')).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)
    assert out.stdout.split() == ["hello", "2", "Decimal"]
    assert (tmp_path / "moneta.db").exists()  # the call is in the ledger


def test_events_stored_under_the_old_module_names_still_resolve():
    from eventsourcing.utils import resolve_topic

    import moneta.infrastructure.event_store  # noqa: F401  registers the old names
    from moneta.domain.request_record import RequestRecord

    assert resolve_topic("domain.request_record:RequestRecord.Admitted") is RequestRecord.Admitted
