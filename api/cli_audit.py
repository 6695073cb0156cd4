"""`moneta audit ...`: the auditors' commands, each module adding its own to the `audit` parser."""
from __future__ import annotations

import argparse

from moneta.api import cli_audit_chain


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="verify, question and export the ledger")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    cli_audit_chain.register(audit_commands)
