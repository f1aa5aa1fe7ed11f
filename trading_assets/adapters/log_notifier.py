"""The local notifier: notifications go to the log (WARNING for problems, INFO for news)
and the last few stay in memory, so a test or a local run can see what would have been
sent to SNS in production."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque

from trading_assets.core.messaging import Notification

LOGGER_NAME = "trading_assets.notifications"


class LogNotifier:
    """`core.messaging.Notifier` that logs; `sent` holds the last `keep` notifications."""

    def __init__(self, logger_name: str = LOGGER_NAME, keep: int = 100) -> None:
        self._log = logging.getLogger(logger_name)
        self._sent: deque[Notification] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LogNotifier({self._log.name!r}, keep={self._sent.maxlen})"

    def notify(self, notification: Notification) -> None:
        level = logging.WARNING if notification.kind.is_problem else logging.INFO
        flow = f" [{notification.flow}]" if notification.flow else ""
        details = json.dumps(dict(notification.details), sort_keys=True, default=str) if notification.details else ""
        self._log.log(level, "%s%s: %s: %s%s", notification.kind.value, flow, notification.subject,
                      notification.message, f" {details}" if details else "",
                      extra={"notification_kind": notification.kind.value})
        with self._lock:
            self._sent.append(notification)

    @property
    def sent(self) -> list[Notification]:
        """Oldest first."""
        with self._lock:
            return list(self._sent)
