"""Prometheus metrics of a worker process. Labels never carry an address or an order id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "ct_events_consumed_total",
    "Kafka records consumed, by consumer and outcome",
    ["consumer", "outcome"],
)
EMAILS_SENT = Counter("ct_emails_sent_total", "Notification emails accepted by the SMTP upstream")
EMAILS_FAILED = Counter(
    "ct_emails_failed_total",
    "Notification emails that failed, by kind (permanent/transient)",
    ["kind"],
)
SMTP_SECONDS = Histogram(
    "ct_smtp_send_seconds",
    "Time to hand one message to the SMTP upstream",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGES_RELAYED = Counter(
    "ct_messages_relayed_total", "Messages forwarded by the relay", ["direction"]
)
MESSAGES_REJECTED = Counter(
    "ct_messages_rejected_total", "Relay recipients or messages refused, by reason", ["reason"]
)
DLQ_RECORDS = Counter(
    "ct_dlq_records_total", "Records sent to the dead-letter topic", ["component"]
)
CONSUMER_LAG = Gauge(
    "ct_consumer_lag", "Records behind the partition's high watermark", ["consumer", "partition"]
)
BATCH_SECONDS = Histogram(
    "ct_batch_seconds",
    "Time to make one consumed batch durable",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TIMELINE_WRITES = Counter("ct_timeline_entries_written_total", "Timeline entries added to orders")
RETRIES = Counter("ct_retries_total", "Transient failures retried, by operation", ["operation"])
BOUNCES_RECEIVED = Counter(
    "ct_bounces_received_total",
    "Mail to VERP addresses, by outcome (hard_bounce, soft_bounce, refused, complaint, "
    "not_a_report; forged, expired, malformed, unknown_message: refused at RCPT)",
    ["outcome"],
)
NOTIFICATIONS_SUPPRESSED = Counter(
    "ct_notifications_suppressed_total",
    "Notifications not sent because the customer's address bounced hard before",
)
WEB_REQUESTS = Histogram(
    "ct_web_request_seconds",
    "Console and API requests, by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEB_LOGINS = Counter("ct_web_logins_total", "Console sign-ins, by outcome", ["outcome"])
