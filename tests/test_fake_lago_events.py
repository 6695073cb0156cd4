"""The fake Lago's events API answers as Lago's description and server do: what delivery and
reconciliation are tested against must itself be right."""
from __future__ import annotations

import httpx

from tests.lago_usage_world import lago  # noqa: F401


def _client(fake, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=f"{fake.url}/api/v1", headers={"Authorization": f"Bearer {key or fake.api_key}"})


def _event(transaction_id: str, subscription: str = "sub_1", **fields) -> dict:
    return {"transaction_id": transaction_id, "external_subscription_id": subscription, "code": "llm_usage",
            "timestamp": "1779271200.123", "precise_total_amount_cents": "0.0123", **fields}


def test_a_batch_is_all_or_nothing_and_at_most_100(lago):
    fake, events = lago
    with _client(fake) as client:
        too_many = client.post("/events/batch", json={"events": [_event(f"t{n}") for n in range(101)]})
        one_bad = client.post("/events/batch", json={"events": [
            _event("a"), _event("b", timestamp="2026-05-20T12:00:00Z"), _event("c", subscription="sub_nope")]})
        ok = client.post("/events/batch", json={"events": [_event("a"), _event("a", subscription="sub_2")]})
        again = client.post("/events/batch", json={"events": [_event("z"), _event("a")]})
    assert (too_many.status_code, too_many.json()["error_details"]) == (422, {"events": ["too_many_events"]})
    assert one_bad.status_code == 422 and one_bad.json() == {
        "status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
        "error_details": {"1": {"timestamp": ["invalid_format"]},
                          "2": {"external_subscription_id": ["subscription_not_found"]}}}
    assert ok.status_code == 200 and [e["lago_customer_id"] for e in ok.json()["events"]] == [None, None]
    assert again.json()["error_details"] == {"1": {"transaction_id": ["value_already_exist"]}}
    assert sorted((e["transaction_id"], e["external_subscription_id"]) for e in events.stored()) == [
        ("a", "sub_1"), ("a", "sub_2")]  # `z` went with its batch


def test_one_event_is_refused_as_lago_refuses_it(lago):
    fake, _ = lago
    with _client(fake) as client:
        created = client.post("/events", json={"event": _event("x", timestamp=1779271200)})
        duplicate = client.post("/events", json={"event": _event("x")})
        unknown = client.post("/events", json={"event": _event("y", subscription="sub_nope")})
        missing = client.post("/events", json={"event": {"transaction_id": "y", "external_subscription_id": "sub_1"}})
    with _client(fake, key="wrong") as client:
        unauthorised = client.post("/events", json={"event": _event("w")})
    event = created.json()["event"]
    assert (event["timestamp"], event["precise_total_amount_cents"]) == ("2026-05-20T10:00:00.000Z", "0.0123")
    assert (duplicate.status_code, duplicate.json()["error_details"]) == (422, {"transaction_id": ["value_already_exist"]})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "subscription_not_found")
    assert missing.json()["error_details"] == {"code": ["value_is_mandatory"]}
    assert unauthorised.json() == {"status": 401, "error": "Unauthorized"}


def test_events_are_listed_filtered_and_paged_newest_first(lago):
    fake, _ = lago
    with _client(fake) as client:
        client.post("/events/batch", json={"events": [_event(f"t{n}", timestamp=1779271200 + n) for n in range(25)]})
        client.post("/events", json={"event": _event("other", subscription="sub_2")})
        first = client.get("/events", params={"external_subscription_id": "sub_1"}).json()
        second = client.get("/events", params={"external_subscription_id": "sub_1", "page": 2}).json()
        window = client.get("/events", params={"timestamp_from": "2026-05-20T10:00:05Z",
                                                "timestamp_to": "2026-05-20T10:00:07Z", "code": "llm_usage"}).json()
        found = client.get("/events/t3").json()
        lost = client.get("/events/nothing")
    assert [e["transaction_id"] for e in first["events"]][:2] == ["t24", "t23"] and len(first["events"]) == 20
    assert first["meta"] == {"current_page": 1, "next_page": 2, "prev_page": None, "total_pages": 2,
                             "total_count": 25}
    assert len(second["events"]) == 5 and second["meta"]["next_page"] is None
    assert [e["transaction_id"] for e in window["events"]] == ["t7", "t6", "t5"]  # both ends included
    assert found["event"]["timestamp"] == "2026-05-20T10:00:03.000Z"
    assert (lost.status_code, lost.json()["code"]) == (404, "event_not_found")
