"""All I/O: Kafka, MongoDB, SMTP, DNS, key files; the only modules that talk to servers."""
