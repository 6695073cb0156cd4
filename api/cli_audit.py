"""`moneta audit ...`: what an auditor asks of the ledger, each module adding its own commands to the
`audit` parser (the chain, point in time and export; explain and replay)."""
from __future__ import annotations

import argparse

from moneta.api import cli_audit_chain, cli_audit_explain


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="verify, question, replay and export the ledger")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    cli_audit_chain.register(audit_commands)
    cli_audit_explain.register(audit_commands)
