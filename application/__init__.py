"""Use cases and the ports they need; the library that calls them is `moneta` itself."""
