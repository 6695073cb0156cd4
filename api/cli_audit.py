"""`moneta audit ...`: what an auditor asks of the ledger."""
from __future__ import annotations

import argparse

from moneta.api import cli_audit_explain


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="question the ledger: explain a call, replay the views")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    cli_audit_explain.register(audit_commands)
