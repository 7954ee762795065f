"""Pure domain logic: takes and returns plain values, knows nothing of Kafka, MongoDB or SMTP."""
