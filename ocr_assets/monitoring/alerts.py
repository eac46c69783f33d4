"""Alerts: a failed run or a failed check reaches a hook. Always logged; POSTed as JSON to a webhook when one is
configured (MonitoringSettings.alert_webhook / $OCR_ASSETS_ALERT_WEBHOOK). A hook that cannot be reached is
logged, never raised: an alert must not fail the run it reports on."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

LOG = logging.getLogger("ocr_assets.alerts")


def send_alert(kind: str, message: str, details: dict | None = None, webhook_url: str = "", log=None,
               timeout_s: float = 5.0) -> dict:
    """Log the alert and POST it to `webhook_url` when set; returns what was sent and whether delivery worked."""
    payload = {"kind": kind, "message": message, "details": details or {}, "at": time.time(), "source": "ocr_assets"}
    (log or LOG.warning)(f"ALERT [{kind}] {message}")
    delivered = None
    if webhook_url:
        request = urllib.request.Request(webhook_url, data=json.dumps(payload, ensure_ascii=False, default=str).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                delivered = 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as err:
            delivered = False
            (log or LOG.warning)(f"alert webhook {webhook_url} not reached: {err}")
    return {**payload, "delivered": delivered}
