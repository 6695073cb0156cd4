"""Adapters that implement the application's ports."""
