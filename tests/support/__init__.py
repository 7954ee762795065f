"""Support code of the test suites: real servers the tests start, and helpers they share."""
