"""Alerts to a Slack incoming webhook. Best effort: an alert that cannot be sent is logged."""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger(__name__)

COLORS = {"critical": "danger", "warning": "warning", "info": "good"}


class SlackNotifier:
    def __init__(self, http: httpx.Client, *, url: str) -> None:
        self._http = http
        self._url = url

    def alert(self, level: str, title: str, message: str) -> bool:
        payload = {
            "text": f"*[{level.upper()}]* {title}",
            "attachments": [{"text": message, "color": COLORS.get(level, "warning")}],
        }
        try:
            response = self._http.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            log.error("slack alert %r not sent: %s", title, type(exc).__name__)
            return False
        if not response.is_success:
            log.error("slack alert %r refused: HTTP %s", title, response.status_code)
            return False
        return True


class LogNotifier:
    """Used when SLACK_WEBHOOK_URL is unset: the alert still reaches the log."""

    def alert(self, level: str, title: str, message: str) -> bool:
        log.warning("ALERT [%s] %s: %s", level, title, message)
        return True
