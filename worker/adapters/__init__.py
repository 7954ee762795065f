"""The only modules that do I/O: Kafka, MongoDB and SMTP."""
