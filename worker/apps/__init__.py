"""Composition roots, wiring only: each builds one worker from the stores, clients, services."""
