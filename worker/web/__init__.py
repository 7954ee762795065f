"""The console and HTTP API (FastAPI): pages, /api, sign-in, and the security around them."""
