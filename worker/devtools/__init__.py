"""Development tools: the demo, the SMTP capture sink, and the events `ct emit` makes."""
