"""In-memory implementations of the services' ports (worker/services/ports.py).

They keep the adapters' semantics that the services rely on (first record stands, idempotent
keeps and suppressions, expiry by the clock) so that `Notifier`, `RelayHandler` and
`BounceIntake` run their scenarios in `make test-unit` with no server; tests/integration runs
the same scenarios against the real stack, some through one test body over both backends.
"""
