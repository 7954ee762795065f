"""Conversation Tracker: masked order conversations between stores and customers.

Public API for other programs: `worker.timeline.get_timeline` (typed timeline entries of an order).
"""

__version__ = "0.1.0"
