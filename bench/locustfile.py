"""The mixed load of bench/load_test.py (driven by it: it writes the users file and reads the samples).

Each simulated person signs in for real (password, then a TOTP code from their own device) and then
browses like its persona: requesters look at their access and requests and sometimes ask for an
auto-approved role and give it back; approvers look at their queue and the grants list; auditors read
the audit trail and reports. Every response is recorded (name, start, duration, error) into
LOAD_SAMPLES at the end, so the driver computes throughput and percentiles over the measured window
only (sign-in excluded).
"""

import json
import os
import random
import re
import time

from django_otp.oath import TOTP
from locust import FastHttpUser, between, constant_throughput, events, task

USERS = json.loads(open(os.environ["LOAD_USERS"]).read())  # noqa: SIM115 - read once at import
RATE = float(os.environ.get("LOAD_RATE_PER_USER", "0"))
SAMPLES: list[tuple[str, float, float, int, str]] = []
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
GRANT = re.compile(r"/grants/(\d+)/")
_next = {"requester": 0, "approver": 0, "auditor": 0}


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, start_time=None, **kwargs):
    SAMPLES.append(
        (
            name,
            start_time or time.time(),
            response_time,
            1 if exception else 0,
            repr(exception)[:160] if exception else "",
        )
    )


@events.quitting.add_listener
def _dump(environment, **kwargs):
    with open(os.environ["LOAD_SAMPLES"], "w") as out:
        json.dump(SAMPLES, out)


def _totp(hex_key: str) -> str:
    generator = TOTP(bytes.fromhex(hex_key), 30, 0, 6, 0)
    generator.time = time.time()
    return f"{generator.token():06d}"


class Person(FastHttpUser):
    abstract = True
    persona = ""
    wait_time = constant_throughput(RATE) if RATE > 0 else between(0, 0)

    def on_start(self) -> None:
        pool = [u for u in USERS if u["persona"] == self.persona]
        self.me = pool[_next[self.persona] % len(pool)]
        _next[self.persona] += 1
        token = self._csrf("/accounts/login/", name="sign-in: form")
        response = self.client.post(
            "/accounts/login/",
            data={"username": self.me["username"], "password": self.me["password"], "csrfmiddlewaretoken": token},
            name="sign-in: password",
        )
        token = CSRF.search(response.text).group(1)
        response = self.client.post(
            "/accounts/otp/",
            data={"otp_token": _totp(self.me["key"]), "csrfmiddlewaretoken": token},
            name="sign-in: otp",
        )
        if "/accounts/" in response.url:
            errors = re.findall(r'class="errorlist[^>]*>(.*?)</ul>', response.text or "", re.S)
            raise RuntimeError(f"sign-in failed for {self.me['username']}: {response.url} {errors}")

    def _csrf(self, url: str, name: str) -> str:
        response = self.client.get(url, name=name)
        return CSRF.search(response.text).group(1)


class Requester(Person):
    persona = "requester"
    weight = 14

    @task(3)
    def home(self) -> None:
        self.client.get("/", name="home")

    @task(3)
    def my_access(self) -> None:
        self.client.get("/access/", name="my access")

    @task(2)
    def my_requests(self) -> None:
        self.client.get("/requests/", name="my requests")

    @task(1)
    def request_and_release(self) -> None:
        """Ask for the auto-approved role, see it in My access, give it back (three writes' worth)."""
        token = self._csrf("/requests/new/", name="request form")
        response = self.client.post(
            "/requests/new/",
            data={
                "role": self.me["auto_role"],
                "duration": "30m",
                "justification": "Load test: check the payout queue",
                "csrfmiddlewaretoken": token,
            },
            name="request (auto-approved) → my access",
        )
        match = GRANT.search(response.text) if response.text else None
        if match:
            # As a person does since issue 18: "Release now…" shows what it will do, then "Yes, release it now".
            url = f"/grants/{match.group(1)}/release/"
            page = self.client.post(url, data={"csrfmiddlewaretoken": token}, name="release grant: confirmation page")
            found = CSRF.search(page.text or "")
            self.client.post(
                url,
                data={"csrfmiddlewaretoken": found.group(1) if found else token, "confirm": "yes"},
                name="release grant",
            )


class Approver(Person):
    persona = "approver"
    weight = 4

    @task(3)
    def queue(self) -> None:
        self.client.get("/approvals/", name="approver queue")

    @task(2)
    def grants(self) -> None:
        self.client.get("/grants/", name="grants list")

    @task(1)
    def home(self) -> None:
        self.client.get("/", name="home")


class Auditor(Person):
    persona = "auditor"
    weight = 2

    @task(3)
    def trail(self) -> None:
        self.client.get("/audit/", name="audit trail")

    @task(1)
    def trail_actor(self) -> None:
        self.client.get(f"/audit/?actor=user{random.randrange(10000)}", name="audit trail by actor")  # noqa: S311

    @task(1)
    def access_report(self) -> None:
        self.client.get("/reports/access/", name="access report")

    @task(1)
    def denied_report(self) -> None:
        self.client.get("/reports/denied/", name="denied report")
