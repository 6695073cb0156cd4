"""What request validation costs per call, in microseconds, outside any server.

    .venv/bin/python benchmarks/validation_cost.py [--seconds 0.5]

Bodies: `bench chat` is the body of `run.py` (one short user message); `large chat` is a
realistic agent turn (a system prompt, 24 turns with tool calls and tool results, 8 tools
with JSON schemas, two base64 images of 64 kB: 200 kB of JSON); `large messages` is the
same conversation in Anthropic's Messages format. For each it times the validator alone on
the parsed body, and the whole edge (read the JSON bytes, refuse NUL, validate).
Prints CPU time (the machine is shared: wall time measures the neighbours too), the fastest
of 7 runs, each as many calls as fit in `--seconds / 7`.
"""
from __future__ import annotations

import argparse
import base64
import time
from typing import Any, Callable

import orjson

from moneta.api.body import parse_json
from moneta.application import anthropic_messages, validation

BENCH_CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say hello in five words."}]}
_IMAGE = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 256).decode()


def _tool(index: int) -> dict[str, Any]:
    properties = {f"field_{n}": {"type": "string", "description": f"Field {n} of tool {index}, a string."}
                  for n in range(6)}
    return {"type": "function", "function": {
        "name": f"tool_{index}", "description": f"Tool number {index}: does one thing well.",
        "parameters": {"type": "object", "properties": properties, "required": ["field_0"]}}}


def _turn(index: int) -> list[dict[str, Any]]:
    call = {"id": f"call_{index}", "type": "function",
            "function": {"name": f"tool_{index % 8}", "arguments": orjson.dumps({"field_0": "x" * 40}).decode()}}
    return [{"role": "user", "content": f"Step {index}: please look this up. " * 8},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{index}", "content": "result line\n" * 30}]


def large_chat() -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a careful agent. " * 60}]
    for index in range(24):
        messages += _turn(index)
    messages.append({"role": "user", "content": [
        {"type": "text", "text": "What is in these two pictures?"},
        {"type": "image_url", "image_url": {"url": _IMAGE, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": _IMAGE}}]})
    return {"model": "bench", "messages": messages, "tools": [_tool(n) for n in range(8)], "tool_choice": "auto",
            "temperature": 0.2, "max_tokens": 1024, "stream": True, "stream_options": {"include_usage": True},
            "user": "user-42", "metadata": {"team": "search"}}


def large_messages() -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for index in range(24):
        messages += [
            {"role": "user", "content": f"Step {index}: please look this up. " * 8},
            {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{index}", "name": f"tool_{index % 8}",
                                               "input": {"field_0": "x" * 40}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{index}",
                                          "content": "result line\n" * 30}]},
        ]
    image = {"type": "base64", "media_type": "image/png", "data": _IMAGE.split(",", 1)[1]}
    messages[-1]["content"] += [{"type": "text", "text": "What is in these two pictures?"},
                                {"type": "image", "source": image}, {"type": "image", "source": image}]
    functions = [_tool(n)["function"] for n in range(8)]
    tools = [{"name": f["name"], "description": f["description"], "input_schema": f["parameters"]} for f in functions]
    return {"model": "bench", "max_tokens": 1024, "system": "You are a careful agent. " * 60,
            "messages": messages, "tools": tools, "tool_choice": {"type": "auto"}, "stream": True,
            "metadata": {"user_id": "user-42"}}


def per_call_us(function: Callable[[], Any], seconds: float) -> float:
    """The CPU microseconds one call takes, in the fastest of 7 runs."""
    calls = 1
    while True:  # size a run to about seconds / 7
        started = time.process_time()
        for _ in range(calls):
            function()
        if time.process_time() - started > seconds / 70:
            break
        calls *= 2
    runs = []
    for _ in range(7):
        started = time.process_time()
        for _ in range(calls * 10):
            function()
        runs.append((time.process_time() - started) / (calls * 10) * 1e6)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement (default 0.5)")
    seconds = parser.parse_args().seconds
    cases = [("bench chat", BENCH_CHAT, validation.validate_chat),
             ("large chat", large_chat(), validation.validate_chat),
             ("large messages", large_messages(), anthropic_messages.validate_request)]
    print(f"{'body':<16}{'JSON bytes':>12}{'validator µs':>15}{'edge µs':>10}{'(parse alone)':>15}")
    for name, body, validate in cases:
        raw = orjson.dumps(body)
        alone = per_call_us(lambda: validate(body), seconds)
        edge = per_call_us(lambda: validate(parse_json(raw)), seconds)
        parse = per_call_us(lambda: orjson.loads(raw), seconds)
        print(f"{name:<16}{len(raw):>12,}{alone:>15.1f}{edge:>10.1f}{parse:>15.1f}")


if __name__ == "__main__":
    main()
