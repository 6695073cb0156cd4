"""Read models fed from the ledger's notification log, each page applied with its tracking position."""
