"""The library: `from moneta import completion`, no web framework involved."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from moneta import token_counter
from tests.fake_openai import FakeOpenAI

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys, uuid
    from moneta import completion, acompletion, embedding, aembedding, transcription, text_completion

    out = {}
    r = completion(model="mock/demo", messages=[{"role": "user", "content": "two words"}])
    out["content"] = r.choices[0].message.content
    out["content_by_key"] = r["choices"][0]["message"]["content"]
    out["usage"] = dict(r.usage)
    out["json"] = json.loads(json.dumps(r))["object"]
    out["stream"] = "".join(c.choices[0].delta.content or "" for c in
        completion(model="mock/demo", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)

    async def run_async():
        chunks = await acompletion(model="mock/demo", messages=[{"role": "user", "content": "hi"}], stream=True,
                                   stream_options={"include_usage": True})
        parts = [c async for c in chunks]
        emb = await aembedding(model="mock/e", input="x", dimensions=4)
        return parts[-1].usage.total_tokens, len(emb.data[0].embedding)
    out["async_usage"], out["dimensions"] = asyncio.run(run_async())
    out["transcription"] = transcription(model="mock/whisper", file=("a.mp3", b"0" * 32000)).text
    out["text"] = text_completion(model="mock/demo", prompt="Once", mock_response="upon").choices[0].text
    out["upstream"] = completion(model="openai/gpt-4o-mini", api_base=sys.argv[1], api_key=sys.argv[2],
                                 messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
    try:
        completion(model="mock/demo", messages=[])
    except Exception as e:
        out["error"] = [type(e).__name__, e.status_code, e.param]
    out["web_framework_loaded"] = any(m in sys.modules for m in ("fastapi", "starlette", "uvicorn"))
    from moneta.infrastructure.event_store import StoreLocation
    app = StoreLocation.from_url(None).open()
    out["ledger_events"] = app.recorder.max_notification_id()
    print(json.dumps(out))
""")


@pytest.fixture
def upstream():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def test_library_calls_work_offline_and_are_recorded(tmp_path, upstream):
    result = subprocess.run([sys.executable, "-c", SCRIPT, upstream.base_url, upstream.api_key],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = __import__("json").loads(result.stdout)
    assert out["content"] == out["content_by_key"] == "This is a mock response to: two words"
    prompt = token_counter(model="demo", messages=[{"role": "user", "content": "two words"}])
    reply = token_counter(model="demo", text=out["content"])
    assert out["usage"] == {"prompt_tokens": prompt, "completion_tokens": reply, "total_tokens": prompt + reply}
    assert out["json"] == "chat.completion"
    assert out["stream"] == "This is a mock response to: hi"
    assert out["async_usage"] == (token_counter(model="demo", messages=[{"role": "user", "content": "hi"}])
                                  + token_counter(model="demo", text=out["stream"]))
    assert out["dimensions"] == 4
    assert out["transcription"] == "mock transcription of a.mp3 (32000 bytes)"
    assert out["text"] == "upon"
    assert out["upstream"] == upstream.reply
    assert out["error"] == ["BadRequestError", 400, "messages"]
    assert out["web_framework_loaded"] is False
    # 7 calls, each Admitted + Completed, in ./moneta.db (the embedded default); the refused
    # call never reached the ledger (the library validates before admitting).
    assert out["ledger_events"] == 14
    assert (tmp_path / "moneta.db").exists()
