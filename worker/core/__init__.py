"""What every process needs and no I/O client: settings, logging, metrics, retries, crypto."""
