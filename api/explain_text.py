"""One call's explanation (application/request_explanation.py) as text for a person to read."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def render(explained: dict[str, Any]) -> str:
    lines = [f"Request {explained['request_id']}"]
    lines += _caller(explained["caller"])
    lines += _decision(explained["decision"])
    lines += _attempts(explained["attempts"])
    lines += _settlement(explained["settlement"])
    lines += _related(explained["related"])
    lines.append("Events")
    lines += [f"  {e['version']:>3}  {_value(e['timestamp'])}  {e['type']} (schema v{e['class_version']})  {_json(e['fields'])}"
              for e in explained["events"]]
    return "\n".join(lines)


def _caller(caller: dict[str, Any]) -> list[str]:
    kinds = {"virtual_key": "a virtual key", "master_key": "the master key", "unknown_key": "a key not known as a"
             " virtual key", "none": "no key (the gateway had no master key)"}
    lines = ["Caller", f"  {kinds[caller['kind']]}"]
    named = [f"{label} {caller[name]}" for name, label in (
        ("key_alias", "alias"), ("key_id", "key id"), ("key_hash", "key hash"), ("team_id", "team"),
        ("user_id", "user"), ("org_id", "organization"), ("end_user", "end user (customer)")) if caller[name]]
    return lines + [f"  {item}" for item in named]


def _decision(decision: dict[str, Any]) -> list[str]:
    lines = [f"Decision: {decision['outcome']} at {_value(decision['at'])}, {decision['call_type']} on model group"
             f" {decision['model_group']}"]
    if decision.get("refusal"):
        refusal = decision["refusal"]
        lines.append(f"  refused: {refusal['status_code']} {refusal['code'] or refusal['error_type']}: {refusal['reason']}")
    route = decision.get("route") or {}
    if route.get("deployment"):
        lines.append(f"  route: deployment {route['deployment']} ({route.get('reason') or 'no reason recorded'})")
    if route.get("route_error"):
        lines.append(f"  route: none at admission ({route['route_error']}); the fallbacks were tried")
    if route.get("cache"):
        lines.append(f"  route: answered from the response cache ({route['cache']})")
    if route.get("candidates"):
        lines.append(f"  candidates: {_json(route['candidates'])}")
    lines += _limits(decision.get("rate_limits"))
    lines += _budget(decision.get("budget"))
    if decision.get("max_tokens_capped_to") is not None:
        lines.append(f"  max_tokens lowered to {decision['max_tokens_capped_to']} (what the budget could pay for)")
    if decision.get("entitlement") is not None:
        lines.append(f"  entitlement: {_json(decision['entitlement'])}")
    if decision.get("instance"):
        lines.append(f"  run by gateway process {decision['instance']}")
    if decision.get("other"):
        lines.append(f"  also recorded: {_json(decision['other'])}")
    return lines


def _limits(limits: dict[str, Any] | None) -> list[str]:
    if not limits:
        return ["  rate limits: none applied"]
    verdict = "allowed" if limits.get("allowed") else (
        f"refused by {limits.get('refused_scope')} {limits.get('refused_limit')}, retry after {limits.get('retry_after_s')} s")
    lines = [f"  rate limits: {verdict}"]
    for scope in limits.get("scopes") or ():
        seen = [f"{name} {scope[name]} (seen {scope[count]})" for name, count in
                (("rpm", "requests"), ("tpm", "tokens"), ("max_parallel", "parallel")) if name in scope]
        lines.append(f"    {scope['scope']}: {', '.join(seen)}")
    return lines


def _budget(budget: dict[str, Any] | None) -> list[str]:
    if not budget:
        return ["  budgets: none applied"]
    verdict = (f"reserved ${budget.get('reserved')}" if budget.get("allowed")
               else f"refused by {budget.get('refused_scope')}")
    lines = [f"  budgets: {verdict}" + (" (unverified: the counters were unreachable)" if budget.get("unverified") else "")]
    for scope in budget.get("scopes") or ():
        soft = f", soft ${scope['soft']}" if scope.get("soft") is not None else ""
        resets = f", resets {scope['resets_at']}" if scope.get("resets_at") else ""
        lines.append(f"    {scope['scope']} (period {scope['period'] or 'lifetime'}): limit ${scope['limit']}{soft},"
                     f" spent ${scope['spent']}, held by calls in flight ${scope['reserved']},"
                     f" headroom ${_value(scope['headroom'])}{resets}")
    return lines


def _attempts(attempts: list[dict[str, Any]]) -> list[str]:
    lines = ["Attempts" if attempts else "Attempts: none (no provider was called)"]
    for attempt in attempts:
        named = " ".join(str(attempt[name]) for name in ("status_code", "error_type") if attempt[name] is not None)
        error = "".join(part for part in (f" {named}" if named else "",
                                          f": {attempt['reason']}" if attempt["reason"] else ""))
        lines.append(f"  {attempt['attempt']}. {attempt['deployment_id']} ({attempt['provider']}/"
                     f"{attempt['provider_model']}) {attempt['outcome']}{error}, {attempt['latency_ms']} ms")
    return lines


def _settlement(settled: dict[str, Any]) -> list[str]:
    at = f" at {_value(settled['at'])}" if settled.get("at") else ""
    lines = [f"Settlement: {settled['outcome']}{at}"]
    if "total_tokens" in settled:
        lines.append(f"  tokens: {settled['prompt_tokens']} prompt + {settled['completion_tokens']} completion"
                     f" = {settled['total_tokens']}" + (" (estimated)" if settled.get("usage_estimated") else ""))
    if "cost_usd" in settled:
        askii = (f", {_value(settled['askii'])} askii at {_value(settled['askii_rate'])} askii per USD"
                 if settled.get("askii") is not None else ", no askii recorded")
        source = f" (price: {settled['price_source']})" if settled.get("price_source") else ""
        lines.append(f"  cost: ${_value(settled['cost_usd'])}{askii}{source}")
    for name in ("cause", "status_code", "error_type", "reason", "instance", "filled_by"):
        if settled.get(name) is not None:
            lines.append(f"  {name.replace('_', ' ')}: {settled[name]}")
    for response in settled.get("responses") or ():
        lines.append(f"  response {response['response_id']}: ${_value(response['cost_usd'])} {_json(response['usage'])}")
    for overrun in settled["overruns"]:
        lines.append(f"  budget overrun: reserved ${_value(overrun['reserved_usd'])}, charged"
                     f" ${_value(overrun['charged_usd'])} ({overrun['reason']})")
    return lines


def _related(related: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["Related streams"]
    for name, streams in related.items():
        if not streams:
            lines.append(f"  {name}: none")
        for stream in streams:
            kinds = ", ".join(event["type"].rpartition(".")[2] for event in stream["events"])
            lines.append(f"  {name}: {stream['aggregate'] or 'stream'} {stream['stream_id']}: {kinds}")
            lines += [f"    {_value(event['timestamp'])} {event['type']} {_json(event['fields'])}"
                      for event in stream["events"]]
    return lines


def _value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return "-" if value is None else str(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=_value, separators=(", ", ": "))
