"""The library's BudgetManager: LiteLLM's per-user budgets, kept in the ledger, enforced on library
calls naming `user=`, shared by processes on one ledger, and replayed by rebuilding the views."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

# "hi" to the mock: 8 prompt and 8 completion tokens at $1 and $2 per million, all reserved with max_tokens 8.
CALL_COST = Decimal("0.000024")

PRELUDE = textwrap.dedent("""
    import json, sys
    from decimal import Decimal
    import moneta
    from moneta import bootstrap
    M = [{"role": "user", "content": "hi"}]
    out = {}
    def dump(value):
        print(json.dumps(value, default=str))
""")


def run(script: str, workdir: Path, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script), *args], capture_output=True,
                            text=True, timeout=180, cwd=workdir,
                            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{workdir / 'ledger.db'}"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


LITELLM_STYLE = """
    bm = moneta.BudgetManager(project_name="demo")
    if not bm.is_valid_user("ann"):
        out["created"] = bm.create_budget(total_budget=Decimal(sys.argv[1]) * 3, user="ann", duration="daily")
    calls = 0
    try:
        while True:
            r = moneta.completion(model="mock/demo", messages=M, user="ann", max_tokens=8)
            bm.update_cost(completion_obj=r, user="ann")  # charged by the call itself: nothing added
            calls += 1
    except moneta.BudgetExceededError as refused:
        out["refused"] = str(refused)
    out["calls"] = calls
    out["usage"] = bm.get_usage("ann")
    out["total"] = bm.get_total_budget("ann")
    out["users"], out["valid"] = bm.get_users(), [bm.is_valid_user("ann"), bm.is_valid_user("bob")]
    out["reset"] = bm.reset_cost("ann")["user"]
    held = bm.check_budget("ann", "mock/demo", messages=M, max_tokens=8)
    outside = {"model": "demo", "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16}}
    out["after_manual"] = bm.update_spend(held, outside)["user"]
    out["after_text"] = bm.update_cost("ann", model="openai/gpt-4o-mini", input_text="hi", output_text="hello")["user"]
    out["model_cost"] = bm.get_model_cost("ann")
    out["current"] = bm.get_current_cost("ann")
    side = bootstrap.library_budgets()
    side.runner.rebuild()
    out["rebuilt"] = bm.get_usage("ann")
    app = bootstrap.library_container().event_store
    events = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(start=1, limit=10_000)]
    out["events"] = [type(e).__qualname__ for e in events]
    out["manual"] = sorted(e.call_type for e in events if type(e).__qualname__ == "RequestRecord.Admitted")
    dump(out)
"""


def test_litellm_style_budget_refuses_reads_back_exactly_resets_and_replays(tmp_path: Path) -> None:
    out = run(LITELLM_STYLE, tmp_path, str(CALL_COST))
    assert out["created"]["total_budget"] == str(CALL_COST * 3) and out["created"]["duration"] == "1d"
    assert out["calls"] == 3 and "customer:ann" in out["refused"]
    usage = out["usage"]
    assert Decimal(usage["current_cost"]) == Decimal(usage["lifetime_cost"]) == CALL_COST * 3
    assert {m: Decimal(c) for m, c in usage["model_cost"].items()} == {"mock/demo": CALL_COST * 3}
    assert Decimal(out["total"]) == CALL_COST * 3
    assert out["users"] == ["ann"] and out["valid"] == [True, False]
    # a new period: nothing spent in it, the lifetime and the ledger keep everything
    reset = out["reset"]
    assert Decimal(reset["current_cost"]) == 0 and reset["model_cost"] == {}
    assert Decimal(reset["lifetime_cost"]) == CALL_COST * 3 and reset["period_start"] > usage["period_start"]
    # an outside call, reserved then settled, and one told after the fact: both "manual" calls in the ledger
    assert Decimal(out["after_manual"]["current_cost"]) == CALL_COST
    text_cost = Decimal(out["current"]) - CALL_COST
    assert text_cost > 0 and {m: Decimal(c) for m, c in out["model_cost"].items()} == {
        "mock/demo": CALL_COST, "openai/gpt-4o-mini": text_cost}
    assert Decimal(out["after_text"]["lifetime_cost"]) == CALL_COST * 4 + text_cost
    assert out["manual"] == ["chat"] * 3 + ["manual"] * 2
    assert out["events"].count("RequestRecord.Denied") == 1
    assert out["events"].count("Customer.CustomerUpdated") == 1  # the reset, an event: nothing deleted
    rebuilt = out["rebuilt"]
    for field in ("current_cost", "lifetime_cost", "model_cost", "period_start"):
        assert rebuilt[field] == out["after_text"][field]


SPENDER = """
    bm = moneta.BudgetManager(project_name="workers")
    made = 0
    for _ in range(int(sys.argv[1])):
        try:
            moneta.completion(model="mock/demo", messages=M, user="shared", max_tokens=8)
            made += 1
        except moneta.BudgetExceededError:
            pass
    dump({"made": made})
"""

READER = """
    bm = moneta.BudgetManager(project_name="reader")
    if sys.argv[1] == "create":
        bm.create_budget(total_budget=Decimal(sys.argv[2]), user="shared")
    else:
        before = bm.get_usage("shared")
        bootstrap.library_budgets().runner.rebuild()
        dump({"before": before, "after": bm.get_usage("shared")})
        sys.exit(0)
    dump({})
"""


def test_two_processes_on_one_ledger_never_overspend(tmp_path: Path) -> None:
    run(READER, tmp_path, "create", str(CALL_COST * 10))
    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda _: run(SPENDER, tmp_path, "15")["made"], range(2)))
    assert sum(made) == 10
    out = run(READER, tmp_path, "read")
    for seen in (out["before"], out["after"]):
        assert Decimal(seen["current_cost"]) == CALL_COST * 10  # all of it, not a nano-dollar more
        assert {m: Decimal(c) for m, c in seen["model_cost"].items()} == {"mock/demo": CALL_COST * 10}
