"""The use cases, each the one owner of its guarantee, built from adapters and domain rules."""
