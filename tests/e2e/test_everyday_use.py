"""Issue 18's "done when": each persona's main flows in Chromium with the fixed behaviour asserted
(confirmations with counts, typed input kept, codes spent last, the queue count following the filters),
axe-core on every main page of each persona (no serious or critical violation), and screenshots of
those pages at 1366x900 and 390x844 with the document no wider than the viewport.

One browser for the session (tests/e2e/conftest.py), one signed-in context per persona test; axe-core
is the npm package's axe.min.js, vendored under tests/e2e/vendor (test-only, never served)."""

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from accessgov.models import AccessRequest, BreakGlassFollowUp, Eligibility, Grant, ReviewCampaign
from accessgov.otp import base32_secret
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.services import reviews
from tests.conftest import PASSWORD
from tests.e2e.conftest import ARTIFACTS
from tests.support.totp_reference import time_step, totp, wait_for_next_step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE_VERSION = "4.14.1"  # npm axe-core, pinned; see tests/e2e/vendor/README.md
AXE = Path(__file__).resolve().parent / "vendor" / f"axe-{AXE_VERSION}.min.js"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = ARTIFACTS / "everyday"
# Pages that still scroll sideways at 390 px until the phone layout lands (issue 18, item 9, another
# branch): reported as expected failures, not hidden. Remove a path here once it fits.
PHONE_LAYOUT_PENDING: list[re.Pattern[str]] = []  # pages still waiting for the phone layout (issue 18, item 9): none
H = timedelta(hours=1)
# Minor by axe's measure, but named in issue 18 (item 11): kept fixed.
ALWAYS_ENFORCED = {"empty-table-header", "aria-progressbar-name"}


# --- Helpers ------------------------------------------------------------------------------------


def _sign_in(context, live_server, user):
    page = context.new_page()
    secret = base32_secret(TOTPDevice.objects.get(user=user, confirmed=True))
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/accounts/otp/"))
    # The previous time step's code (within the device's tolerance): the current step's code stays
    # unused for the flows that type one. Typed at least 8 s before the step ends: checked after the
    # next step began it would be two steps old and refused (this failed once on a loaded CI machine).
    if 30 - time.time() % 30 < 8:
        wait_for_next_step(time_step())
    page.get_by_label("Code").fill(totp(secret, at=time.time() - 30))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(live_server.url + "/")
    return page


@pytest.fixture
def short_step_up(settings):
    """A 2-second step-up window, so the code of the sign-in no longer counts once the flow starts and
    the typed code is the one that must be spent (and spent only once everything else passed)."""
    settings.OTP_STEP_UP_WINDOW = timedelta(seconds=2)

    def wait(page):
        page.wait_for_timeout(2_500)

    return wait


def _current_code(user) -> str:
    return totp(base32_secret(TOTPDevice.objects.get(user=user, confirmed=True)))


def _axe_problems(page) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # The page's CSP refuses inline scripts, so the library is evaluated in the page instead of
        # being added as an inline <script> (add_script_tag) that the CSP would block.
        page.evaluate(AXE.read_text(encoding="utf-8"))
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} ({', '.join(v['nodes'])})"
        for v in violations
        if v["impact"] in ("serious", "critical") or v["id"] in ALWAYS_ENFORCED
    ]


def _overflow(page) -> int:
    """How many CSS pixels the document is wider than the viewport (0 when it fits)."""
    return page.evaluate("() => Math.max(0, document.documentElement.scrollWidth - window.innerWidth)")


class Survey:
    """Visits a persona's main pages at desktop and phone sizes: axe, screenshots, widths."""

    def __init__(self, page, live_server, persona: str):
        self.page, self.base, self.persona = page, live_server.url, persona
        self.axe: dict[str, list[str]] = {}
        self.wide: dict[str, int] = {}
        self.pending_wide: dict[str, int] = {}
        SHOTS.mkdir(parents=True, exist_ok=True)

    def visit(self, path: str) -> None:
        page = self.page
        name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"
        page.set_viewport_size(DESKTOP)
        response = page.goto(self.base + path)
        assert response is not None and response.status == 200, f"{self.persona} {path}: {response and response.status}"
        if problems := _axe_problems(page):
            self.axe[path] = problems
        if width := _overflow(page):
            self.wide[f"{path} @1366"] = width
        page.screenshot(path=str(SHOTS / f"{self.persona}-{name}-1366.jpeg"), full_page=True, type="jpeg", quality=70)
        page.set_viewport_size(PHONE)
        if width := _overflow(page):
            pending = any(pattern.match(path) for pattern in PHONE_LAYOUT_PENDING)
            (self.pending_wide if pending else self.wide)[f"{path} @390"] = width
        page.screenshot(path=str(SHOTS / f"{self.persona}-{name}-390.jpeg"), full_page=True, type="jpeg", quality=70)
        page.set_viewport_size(DESKTOP)

    def check(self, request) -> None:
        assert self.axe == {}, f"axe-core serious/critical violations as {self.persona}: {self.axe}"
        assert self.wide == {}, f"pages wider than the viewport as {self.persona}: {self.wide}"
        if self.pending_wide:
            request.applymarker(
                pytest.mark.xfail(reason="issue 18 item 9 (phone layout, another branch) not merged yet", strict=False)
            )
            assert self.pending_wide == {}, f"still wider than a phone (item 9): {self.pending_wide}"


def _context(browser):
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def csp_watch(browser):
    """Contexts whose console CSP violations fail the test (as tests/e2e/conftest.py's new_context)."""
    contexts, violations = [], []

    def make():
        context = _context(browser)
        context.on(
            "console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None
        )
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert violations == [], violations


@pytest.fixture
def scene(world):
    """The world of tests/conftest.py with something on every page: a pending request, an active
    grant, a break-glass use with its open follow-up, a group eligibility and an open review."""
    world.role.break_glass_allowed = True
    world.role.step_up_required = True
    world.role.save(update_fields=["break_glass_allowed", "step_up_required"])
    world.role_two.break_glass_allowed = True
    world.role_two.save(update_fields=["break_glass_allowed"])
    oncall = Group.objects.create(name="payments on-call")
    world.approver2.groups.add(oncall)
    world.group_eligibility = Eligibility.objects.create(role=world.role, group=oncall)
    Eligibility.objects.create(role=world.role_two, user=world.approver2)
    world.pending = ar.access_request_submit(
        world.requester, role=world.role, duration=H, justification="Investigating INC-42 on payments"
    )
    world.granted = ar.access_request_submit(
        world.requester, role=world.role_two, duration=H, justification="Quarter-end reconciliation"
    )
    ar.access_request_approve(world.approver, world.granted.pk, comment="ok")
    ar.access_request_approve(world.approver2, world.granted.pk, comment="ok too")
    world.grant = Grant.objects.get(access_request=world.granted)
    world.break_glass = gs.break_glass_activate(
        world.approver2,
        role=world.role_two,
        justification="INC-77: payouts stuck, primary down",
        duration=timedelta(minutes=30),
        step_up_at=timezone.now(),
    )
    world.campaign = reviews.review_campaign_create(
        world.auditor,
        name="Payments Q4",
        systems=[world.system],
        due_at=timezone.now() + timedelta(days=7),
        no_response=ReviewCampaign.NoResponse.REVOKE,
    )
    return world


# --- Requester ------------------------------------------------------------------------------------


def test_requester_flows_and_pages(live_server, scene, csp_watch, short_step_up, request):
    w = scene
    page = _sign_in(csp_watch(), live_server, w.requester)
    short_step_up(page)

    # Break-glass: a duration error keeps everything typed and does not spend the code; the same
    # code then works (items 2 and 3).
    page.goto(live_server.url + "/break-glass/")
    page.get_by_label("Role").select_option(label="Payments DB · read-write")
    page.get_by_label("Duration").fill("3h")
    page.get_by_label("Justification").fill("INC-80: payments API returns 500s")
    code = _current_code(w.requester)
    page.get_by_label("Authenticator code").fill(code)
    page.get_by_role("button", name=re.compile("Activate|Break", re.I)).click()
    duration = page.get_by_label("Duration")
    expect(duration).to_have_attribute("aria-invalid", "true")
    expect(duration).to_be_focused()
    expect(page.get_by_label("Justification")).to_have_value("INC-80: payments API returns 500s")
    assert not Grant.objects.filter(user=w.requester, role=w.role).exists()
    duration.fill("30m")
    page.get_by_label("Authenticator code").fill(code)  # the SAME code
    page.get_by_role("button", name=re.compile("Activate|Break", re.I)).click()
    page.wait_for_url(live_server.url + "/access/")
    bg_grant = Grant.objects.get(user=w.requester, role=w.role)
    assert bg_grant.is_break_glass

    # Release asks first, with what will happen; nothing ends until confirmed (item 1).
    card = page.locator("article.grant-card", has_text="Payments DB · admin")
    card.get_by_role("button", name="Release now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Release your access to Payments DB · admin?")
    expect(page.get_by_text("1 grant ends now")).to_be_visible()
    assert Grant.objects.get(pk=w.grant.pk).ended_at is None
    page.get_by_role("link", name="Back, change nothing").click()
    assert Grant.objects.get(pk=w.grant.pk).ended_at is None

    survey = Survey(page, live_server, "requester")
    for path in (
        "/",
        "/access/",
        "/requests/",
        "/requests/new/",
        f"/requests/{w.pending.pk}/",
        f"/grants/{w.grant.pk}/",
        "/break-glass/",
        "/systems/",
        f"/systems/{w.system.slug}/",
        "/accounts/security/",
        "/accounts/tokens/",
    ):
        survey.visit(path)
    # The confirmation page itself.
    page.goto(live_server.url + "/access/")
    page.locator("article.grant-card", has_text="Payments DB · admin").get_by_role("button", name="Release now").click()
    assert _axe_problems(page) == []
    survey.check(request)


# --- Approvers ------------------------------------------------------------------------------------


def test_approver_flows_and_pages(live_server, scene, csp_watch, short_step_up, request):
    w = scene
    page = _sign_in(csp_watch(), live_server, w.approver)
    short_step_up(page)

    # A wrong code keeps comment and duration on the card, the error next to the code field (item 2).
    page.goto(live_server.url + "/approvals/")
    card = page.locator(f"#request-{w.pending.pk}")
    card.get_by_label("Comment").fill("OK for the INC-42 fix")
    card.get_by_label("Approve for (optional)").fill("30m")
    good = _current_code(w.approver)
    card.get_by_label(re.compile("Authenticator code")).fill(f"{(int(good) + 1) % 1_000_000:06d}")
    card.get_by_role("button", name="Approve").click()
    card = page.locator(f"#request-{w.pending.pk}")
    otp_field = card.get_by_label(re.compile("Authenticator code"))
    expect(otp_field).to_have_attribute("aria-invalid", "true")
    expect(otp_field).to_be_focused()
    expect(card.get_by_label("Comment")).to_have_value("OK for the INC-42 fix")
    expect(card.get_by_label("Approve for (optional)")).to_have_value("30m")
    assert AccessRequest.objects.get(pk=w.pending.pk).status == AccessRequest.Status.PENDING

    # A too-long duration with a good code: refused next to the duration, the code not spent (item 3).
    card.get_by_label("Approve for (optional)").fill("3h")
    otp_field.fill(good)
    card.get_by_role("button", name="Approve").click()
    card = page.locator(f"#request-{w.pending.pk}")
    expect(card.get_by_label("Approve for (optional)")).to_have_attribute("aria-invalid", "true")
    card.get_by_label("Approve for (optional)").fill("30m")
    card.get_by_label(re.compile("Authenticator code")).fill(good)  # the SAME code
    page.wait_for_timeout(1_100)  # the wrong code above throttles the device for a second
    card.get_by_role("button", name="Approve").click()
    expect(page.locator(f"#request-{w.pending.pk} .status")).to_have_text("Approved")

    # The count follows the filters, and Clear resets them (item 4).
    page.goto(live_server.url + "/approvals/?risk=critical")
    expect(page.locator("#queue-waiting")).to_contain_text("0 of 0 waiting match these filters")
    page.get_by_role("link", name="Clear the filters").first.click()
    page.wait_for_url(live_server.url + "/approvals/")
    expect(page.locator("#queue-waiting")).to_contain_text("0 waiting, oldest first.")

    # Acknowledging a break-glass use without a comment stays on the form (item 2) — once the use has ended: while
    # it is in use the button is disabled (a sign-off would leave what comes after it unreviewed).
    follow_up = BreakGlassFollowUp.objects.get(grant=w.break_glass)
    page.goto(live_server.url + "/break-glass/follow-ups/")
    expect(page.get_by_role("button", name="Acknowledge after it ends")).to_be_disabled()
    gs.grant_release(w.approver2, w.break_glass.pk)
    page.goto(live_server.url + "/break-glass/follow-ups/")
    page.get_by_role("button", name="Acknowledge").click()
    field = page.locator(f"#ack-{follow_up.pk}")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    expect(page.get_by_text("Write what you checked")).to_be_visible()

    survey = Survey(page, live_server, "approver")
    for path in (
        "/approvals/",
        "/grants/",
        f"/grants/{w.grant.pk}/",
        "/break-glass/follow-ups/",
        f"/requests/{w.pending.pk}/",
    ):
        survey.visit(path)
    survey.check(request)


def test_an_approver_decides_on_the_request_s_own_page(live_server, world, csp_watch):
    """E-mail and Slack links land on the request's page: its Approve and Deny must work there too. They were
    wired to swap "the nearest queue card", which that page has none of, so a click sent nothing at all."""
    from guardian.shortcuts import assign_perm

    from tests.support.factories import RoleFactory

    role = RoleFactory(system=world.system, name="read-only", approvals_required=1)
    assign_perm("accessgov.approve_role", world.approver, role)
    for person in (world.requester, world.approver2):
        Eligibility.objects.create(role=role, user=person)
    to_approve = ar.access_request_submit(
        world.requester, role=role, duration=H, justification="Check the settlement rows"
    )
    to_deny = ar.access_request_submit(world.approver2, role=role, duration=H, justification="Look at the payout table")
    page = _sign_in(csp_watch(), live_server, world.approver)

    page.goto(live_server.url + f"/requests/{to_approve.pk}/")
    page.get_by_label("Comment").fill("OK for the settlement check")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_text(f"Approved: request #{to_approve.pk}")).to_be_visible()
    page.goto(live_server.url + f"/requests/{to_deny.pk}/")
    page.get_by_label("Comment").fill("Not during the freeze")
    page.get_by_role("button", name="Deny").click()
    expect(page.get_by_text(f"Denied: request #{to_deny.pk}")).to_be_visible()
    assert AccessRequest.objects.get(pk=to_approve.pk).status == AccessRequest.Status.APPROVED
    assert AccessRequest.objects.get(pk=to_deny.pk).status == AccessRequest.Status.DENIED


# --- Owner ----------------------------------------------------------------------------------------


def test_owner_flows_and_pages(live_server, scene, csp_watch, request):
    w = scene
    page = _sign_in(csp_watch(), live_server, w.owner)
    page.goto(live_server.url + f"/systems/{w.system.slug}/")

    # The eligibility form keeps role, reason and end date on an error (item 2).
    page.get_by_label("Role", exact=True).select_option(value=str(w.role.pk))
    page.get_by_label("Ends (optional)").fill("2031-05-01T09:30")
    page.get_by_label("Reason").fill("Joins the payments rota")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_text("Choose either a user or a group.")).to_be_visible()
    expect(page.get_by_label("Reason")).to_have_value("Joins the payments rota")
    expect(page.get_by_label("Ends (optional)")).to_have_value("2031-05-01T09:30")

    # Ending the group's eligibility says how many people lose it (item 1).
    page.goto(live_server.url + f"/systems/{w.system.slug}/")
    page.get_by_role("button", name="End group payments on-call's eligibility for read-write").click()
    expect(page.get_by_text("1 person loses eligibility for Payments DB · read-write")).to_be_visible()
    page.get_by_label("Why (recorded").fill("The on-call rota moved to the platform team")
    page.get_by_role("button", name="Yes, end eligibility").click()
    expect(page.get_by_text("Eligibility ended.")).to_be_visible()

    survey = Survey(page, live_server, "owner")
    for path in (f"/systems/{w.system.slug}/", "/reviews/", f"/reviews/{w.campaign.pk}/", "/grants/"):
        survey.visit(path)
    survey.check(request)


# --- Auditor --------------------------------------------------------------------------------------


def test_auditor_flows_and_pages(live_server, scene, csp_watch, request):
    w = scene
    page = _sign_in(csp_watch(), live_server, w.auditor)

    # Closing a review early says what it will do, with counts (item 1).
    page.goto(live_server.url + f"/reviews/{w.campaign.pk}/")
    page.get_by_role("button", name="Close and apply").click()
    total = w.campaign.items.count()
    expect(page.get_by_text(f"{total} items revoked ({total} of them unanswered")).to_be_visible()
    expect(page.get_by_text("The review is due")).to_be_visible()
    assert _axe_problems(page) == []
    page.get_by_role("link", name="Back, change nothing").click()
    assert ReviewCampaign.objects.get(pk=w.campaign.pk).status == ReviewCampaign.Status.OPEN

    survey = Survey(page, live_server, "auditor")
    for path in (
        "/reviews/",
        f"/reviews/{w.campaign.pk}/",
        "/reports/",
        "/reports/access/",
        "/reports/approvals/",
        "/reports/break-glass/",
        "/reports/denied/",
        "/audit/",
        "/audit/changes/",
        "/evidence/",
        "/activity/",
    ):
        survey.visit(path)
    survey.check(request)


# --- Portal admin and a newcomer ------------------------------------------------------------------


def test_admin_and_newcomer_pages(live_server, scene, csp_watch, make_user, request):
    admin = make_user("portaladmin", is_staff=True, is_superuser=True)
    page = _sign_in(csp_watch(), live_server, admin)
    survey = Survey(page, live_server, "admin")
    for path in ("/changes/", "/provisioning/", "/live/", "/systems/"):
        survey.visit(path)
    survey.check(request)

    newcomer = make_user("newcomer", device=False)
    context = csp_watch()
    enrol = context.new_page()
    enrol.goto(live_server.url + "/accounts/login/")
    enrol.get_by_label("Username").fill(newcomer.username)
    enrol.get_by_label("Password").fill(PASSWORD)
    enrol.get_by_role("button", name="Continue").click()
    enrol.wait_for_url(re.compile(r"/accounts/enrol/"))
    assert _axe_problems(enrol) == []
    enrol.set_viewport_size(PHONE)
    assert _overflow(enrol) == 0
    enrol.screenshot(path=str(SHOTS / "newcomer-enrol-390.png"), full_page=True)


def test_text_typed_when_the_session_ended_comes_back_after_signing_in_again(scene, live_server, csp_watch):
    """Nothing typed is lost (PRODUCT.md): the extension form is sent after the idle timeout; the person signs
    in again, lands on the same form, and finds their text in it — filled in by the page, not sent."""
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore

    from accessgov.middleware import SESSION_LAST_SEEN_AT

    w = scene
    context = csp_watch()
    page = _sign_in(context, live_server, w.requester)
    extend = f"/grants/{w.grant.pk}/extend/"
    page.goto(live_server.url + extend)
    page.get_by_label("Justification").fill("The reconciliation job is still running on the last ledger")
    cookie = next(c for c in context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME)
    store = SessionStore(session_key=cookie["value"])
    store[SESSION_LAST_SEEN_AT] = time.time() - 31 * 60  # idle for 31 minutes
    store.save()
    page.get_by_role("button", name=re.compile("Extend|Ask", re.I)).first.click()
    page.wait_for_url(re.compile(r"/accounts/login/"))
    expect(page.get_by_text("What you typed is kept")).to_be_visible()
    assert not AccessRequest.objects.filter(kind=AccessRequest.Kind.EXTENSION).exists()

    secret = base32_secret(TOTPDevice.objects.get(user=w.requester, confirmed=True))
    page.get_by_label("Username").fill(w.requester.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/accounts/otp/"))
    if 30 - time.time() % 30 < 8:
        wait_for_next_step(time_step())
    page.get_by_label("Code").fill(totp(secret, at=time.time()))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(live_server.url + extend)
    expect(page.get_by_label("Justification")).to_have_value(
        "The reconciliation job is still running on the last ledger"
    )
    expect(page.get_by_text("filled in again")).to_be_visible()
    assert not AccessRequest.objects.filter(kind=AccessRequest.Kind.EXTENSION).exists()  # nothing was sent
