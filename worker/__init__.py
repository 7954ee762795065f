"""Conversation Tracker: masked order conversations between stores and customers.

Public API for other programs: `worker.services.timeline.get_timeline` (an order's typed
timeline entries).
"""

__version__ = "0.1.0"
