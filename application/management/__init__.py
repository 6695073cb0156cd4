"""LiteLLM's management API as use cases: keys, teams, users, organizations, customers, budgets.

Each command checks who asks, loads the entities it changes from the ledger, records the change
as events carrying the actor, and returns the new state in LiteLLM's JSON shape.
"""
