"""Composition roots: each wires domain and adapters into one worker."""
