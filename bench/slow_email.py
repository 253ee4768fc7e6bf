"""An email backend for benchmarks: each message takes BENCH_EMAIL_MS milliseconds to "send" (an SMTP
relay's latency) and goes nowhere. Used by ``revocation_lag.py --email-ms``."""

import os
import time

from django.core.mail.backends.base import BaseEmailBackend


class SlowEmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages) -> int:
        delay = int(os.environ.get("BENCH_EMAIL_MS", "0")) / 1000
        for _ in email_messages:
            time.sleep(delay)
        return len(email_messages)
