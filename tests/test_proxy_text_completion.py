"""`/v1/completions` through the real proxy to a chat-only provider: the official `openai` SDK
against `moneta serve`, whose deployment is `anthropic/...` at the Anthropic fake."""
from __future__ import annotations

import openai
import pytest

from tests.live_server import LiveServer
from tests.providers.fakes.anthropic_api import API_KEY, FakeAnthropic

MASTER_KEY = "sk-master-test-0123456789"


@pytest.fixture
async def anthropic():
    server = await FakeAnthropic().start()
    yield server
    await server.stop()


@pytest.fixture
def proxy(anthropic, tmp_path):
    config = {
        "model_list": [{"model_name": "claude-legacy", "litellm_params": {
            "model": "anthropic/claude-sonnet-4-5", "api_base": anthropic.url,
            "api_key": "os.environ/ANTHROPIC_TEST_KEY"}}],
        "general_settings": {"master_key": MASTER_KEY},
    }
    env = {"ANTHROPIC_TEST_KEY": API_KEY, "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    # The fake answers on this test's event loop, so the SDK must not block it: AsyncOpenAI.
    with LiveServer(config, tmp_path, env=env) as live:
        yield openai.AsyncOpenAI(base_url=live.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


async def test_openai_sdk_completions_reach_anthropic_as_messages(anthropic, proxy):
    completion = await proxy.completions.create(model="claude-legacy", prompt=["Say hi", "Say bye"], max_tokens=16,
                                                temperature=0.3, stop=["\n"])

    assert completion.object == "text_completion"
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, "Hi! My name is Claude.", "stop"), (1, "Hi! My name is Claude.", "stop")]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4190, 1006)
    assert sorted(seen.body["messages"][0]["content"][0]["text"] for seen in anthropic.seen) == ["Say bye", "Say hi"]
    assert all(seen.headers["x-api-key"] == API_KEY for seen in anthropic.seen)
    assert {(seen.body["model"], seen.body["max_tokens"], seen.body["temperature"], tuple(seen.body["stop_sequences"]))
            for seen in anthropic.seen} == {("claude-sonnet-4-5", 16, 0.3, ("\n",))}


async def test_openai_sdk_gets_a_400_naming_a_refused_parameter(anthropic, proxy):
    with pytest.raises(openai.BadRequestError) as caught:
        await proxy.completions.create(model="claude-legacy", prompt="Say hi", echo=True)
    assert caught.value.body["param"] == "echo"
    assert anthropic.seen == []
