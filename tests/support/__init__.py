"""Shared test helpers: factories, worlds, fake providers, process helpers. No tests live here."""
