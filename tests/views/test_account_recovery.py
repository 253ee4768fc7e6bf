"""No single admin takes over another person's account (QUALITY.md promise 3). A takeover needs a password the
admin knows and a second factor the admin holds: django-otp's own admins let any admin plant an authenticator on
anyone (and read their backup codes), and the user admin set anyone's password at once — together, one admin
signed in as an approver and as the second admin, and approved their own access under their names. Now the
device admins only show, and setting someone else's password or resetting their authenticator is an account
recovery that another admin, not the person, approves; when applied, the person's sessions end."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, ChangeRequest, User
from accessgov.services import changes
from tests.conftest import PASSWORD, sign_in, verify_session

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a brand new passphrase 42"
PLANTED_KEY = "3132333435363738393031323334353637383930"


def as_(user) -> Client:
    return verify_session(Client(), user)


def set_password_in_admin(admin, person, password=NEW_PASSWORD):
    url = reverse("admin:auth_user_password_change", args=[person.pk])
    return as_(admin).post(url, {"password1": password, "password2": password, "usable_password": "true"})


def test_no_admin_plants_an_authenticator_on_someone_or_reads_their_backup_codes(world, admins):
    admin, _ = admins
    client = as_(admin)
    device = TOTPDevice.objects.get(user=world.approver)
    planted = {"user": world.approver.pk, "name": "mine", "confirmed": "on", "key": PLANTED_KEY, "step": 30}
    planted |= {"digits": 6, "tolerance": 1, "drift": 0, "t0": 0, "throttling_failure_count": 0}
    assert client.post(reverse("admin:otp_totp_totpdevice_add"), planted).status_code == 403
    changed = client.post(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]), planted)
    assert changed.status_code == 403
    assert (
        client.post(reverse("admin:otp_totp_totpdevice_delete", args=[device.pk]), {"post": "yes"}).status_code == 403
    )
    assert client.post(reverse("admin:otp_static_staticdevice_add"), {"user": world.approver.pk}).status_code == 403
    assert list(TOTPDevice.objects.filter(user=world.approver)) == [device]
    assert TOTPDevice.objects.get(pk=device.pk).key == device.key
    # Shown, never the secret or the codes.
    view = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))
    assert view.status_code == 200 and device.key not in view.content.decode()
    codes = changes_user_backup_codes(world.approver)
    static = StaticDevice.objects.get(user=world.approver)
    page = client.get(reverse("admin:otp_static_staticdevice_change", args=[static.pk])).content.decode()
    assert "Codes left" in page and not any(code in page for code in codes)


def changes_user_backup_codes(user) -> list[str]:
    from accessgov import otp

    return otp.new_backup_codes(user)


def test_another_persons_password_set_in_the_admin_waits_for_a_second_admin_who_is_not_them(world, admins):
    first, second = admins
    approver = world.approver
    open_session = sign_in(Client(), approver)
    response = set_password_in_admin(first, approver)
    change = ChangeRequest.objects.get(kind="account_recovery")
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[change.pk])
    assert User.objects.get(pk=approver.pk).check_password(PASSWORD)  # nothing applied yet
    assert change.status == "pending" and change.beneficiary == approver and change.payload["password"]
    page = as_(second).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "set by an admin (not shown)" in page and change.secret_payload not in page
    # Not the proposer, not the person; another admin applies it.
    with pytest.raises(NotAuthorized, match="own policy change"):
        changes.change_approve(first, change.pk)
    approver.is_staff = approver.is_superuser = True
    approver.save()
    with pytest.raises(NotAuthorized, match="resets your own account"):
        changes.change_approve(approver, change.pk)
    assert open_session.get(reverse("home")).status_code == 200
    assert as_(second).post(reverse("change_approve", args=[change.pk])).status_code == 302
    person = User.objects.get(pk=approver.pk)
    assert person.check_password(NEW_PASSWORD) and not person.check_password(PASSWORD)
    change.refresh_from_db()
    assert change.status == "applied" and change.secret_payload == ""
    # Their sessions ended; the password alone does not sign anyone in: the OTP step is still theirs.
    assert open_session.get(reverse("home"))["Location"].startswith(reverse("accounts:login"))
    attempt = Client()
    response = attempt.post(reverse("accounts:login"), {"username": approver.username, "password": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:otp"))
    assert attempt.get(reverse("home"))["Location"].startswith(reverse("accounts:otp"))
    kinds = list(AccessEvent.objects.filter(data__change_id=change.pk).values_list("event_type", "actor__username"))
    assert kinds == [("change.proposed", "admin1"), ("change.applied", "admin2")]


def test_the_authenticator_reset_is_a_four_eyes_action_and_the_person_enrols_anew(world, admins):
    first, second = admins
    requester = world.requester
    open_session = sign_in(Client(), requester)
    response = as_(first).post(
        reverse("admin:accessgov_user_changelist"),
        {"action": "reset_authenticators", "_selected_action": [requester.pk, first.pk]},
    )
    assert response.status_code == 302
    change = ChangeRequest.objects.get(kind="account_recovery")
    assert change.target_id == requester.pk and change.payload == {
        "user_id": requester.pk,
        "password": False,
        "link_to": "",
        "authenticators": True,
    }
    assert TOTPDevice.objects.filter(user=requester).exists()
    changes.change_approve(second, change.pk)
    assert not TOTPDevice.objects.filter(user=requester).exists()
    assert not StaticDevice.objects.filter(user=requester).exists()
    assert open_session.get(reverse("home")).status_code == 302
    # Their own password, then enrolment of their own new authenticator.
    fresh = Client()
    response = fresh.post(reverse("accounts:login"), {"username": requester.username, "password": PASSWORD})
    assert response.status_code == 302
    assert fresh.get(reverse("home"))["Location"].startswith(reverse("accounts:enrol"))


def test_a_second_reset_of_the_same_person_overtakes_the_first_and_a_reset_after_re_enrolment_is_refused(world, admins):
    """A probe's finding: the admin action run twice made two pending resets, and approving both removed an
    authenticator the person had enrolled after the first was applied."""
    first, second = admins
    requester = world.requester
    reset = {"action": "reset_authenticators", "_selected_action": [requester.pk]}
    with time_machine.travel(timezone.now(), tick=False) as clock:
        as_(first).post(reverse("admin:accessgov_user_changelist"), reset)
        clock.shift(60)
        as_(first).post(reverse("admin:accessgov_user_changelist"), reset)
        older, newer = ChangeRequest.objects.filter(kind="account_recovery").order_by("pk")
        page = as_(second).get(reverse("change_detail", args=[newer.pk])).content.decode()
        assert f"It resets the account of <strong>{requester.username}</strong>" in page and "widens" not in page
        older.refresh_from_db()
        assert older.status == "withdrawn" and f"Overtaken by change #{newer.pk}" in older.comment
        with pytest.raises(TransitionNotAllowed):
            changes.change_approve(second, older.pk)
        # A password reset is not overtaken by an authenticator reset: it resets something else.
        password = changes.change_propose_account_recovery(first, user=requester, send_link=True)
        clock.shift(60)
        changes.change_propose_account_recovery(first, user=requester, remove_authenticators=True)
        password.refresh_from_db()
        assert password.status == "pending"
        # An older reset that resets more (password and authenticator) is not overtaken by a newer authenticator
        # reset; once the newer is applied and the person has enrolled anew, approving the older is refused.
        clock.shift(60)
        both = changes.change_propose_account_recovery(
            first, user=requester, send_link=True, remove_authenticators=True
        )
        clock.shift(60)
        only_totp = changes.change_propose_account_recovery(first, user=requester, remove_authenticators=True)
        both.refresh_from_db()
        assert both.status == "pending"
        changes.change_approve(second, only_totp.pk)
        clock.shift(60)
        TOTPDevice.objects.create(user=requester, name="new phone", confirmed=True)
        with pytest.raises(TransitionNotAllowed, match=f"already reset by change #{only_totp.pk}"):
            changes.change_approve(second, both.pk)
    assert TOTPDevice.objects.filter(user=requester, name="new phone").exists()


def test_re_enrolling_does_not_keep_a_pending_reset_out(world, admins):
    """The review's finding on the first version of the check above: a new authenticator alone refused the reset,
    so whoever held the session could re-enrol before each approval and keep every reset out."""
    first, second = admins
    requester = world.requester
    change = changes.change_propose_account_recovery(first, user=requester, remove_authenticators=True)
    TOTPDevice.objects.filter(user=requester).delete()
    TOTPDevice.objects.create(user=requester, name="the intruder's phone", confirmed=True)
    changes.change_approve(second, change.pk)
    assert not TOTPDevice.objects.filter(user=requester).exists()


def test_what_an_account_recovery_refuses(world, admins, make_user):
    first, _ = admins
    with pytest.raises(PolicyViolation, match="security page"):
        changes.change_propose_account_recovery(first, user=first, remove_authenticators=True)
    with pytest.raises(PolicyViolation, match="Say what to reset"):
        changes.change_propose_account_recovery(first, user=world.requester)
    with pytest.raises(NotAuthorized):
        changes.change_propose_account_recovery(world.approver, user=world.requester, remove_authenticators=True)
    robot = make_user("robot", device=False, is_service_account=True)
    with pytest.raises(PolicyViolation, match="service account"):
        changes.change_propose_account_recovery(first, user=robot, remove_authenticators=True)
    assert not ChangeRequest.objects.exists()


def test_your_own_password_in_the_admin_is_set_at_once_and_a_rejected_reset_forgets_the_hash(world, admins):
    first, second = admins
    response = set_password_in_admin(first, first)
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:accessgov_user_change", args=[first.pk]
    )
    assert User.objects.get(pk=first.pk).check_password(NEW_PASSWORD)
    assert not ChangeRequest.objects.exists()
    # Recorded like the security page's change (the review's finding: Django's form saved it without a word).
    event = AccessEvent.objects.get(event_type=AccessEvent.Type.USER_PASSWORD_SET)
    assert event.actor_id == first.pk and event.reason == "Changed by the person"
    first.refresh_from_db()  # its new password: a session signed with the old one has ended
    set_password_in_admin(first, world.requester)
    change = ChangeRequest.objects.get(kind="account_recovery")
    assert change.secret_payload.count("$") >= 2 and NEW_PASSWORD not in change.secret_payload  # a hash
    changes.change_reject(second, change.pk, comment="Not requested by them")
    change.refresh_from_db()
    assert change.status == "rejected" and change.secret_payload == ""
    assert User.objects.get(pk=world.requester.pk).check_password(PASSWORD)


def test_with_four_eyes_off_a_reset_applies_at_once_and_is_still_recorded(world, admins, settings):
    settings.FOUR_EYES_POLICY_CHANGES = False
    first, _ = admins
    set_password_in_admin(first, world.requester)
    assert User.objects.get(pk=world.requester.pk).check_password(NEW_PASSWORD)
    change = ChangeRequest.objects.get(kind="account_recovery")
    assert change.status == "applied" and change.decided_by is None


# --- The one-time link: the person chooses the password, nobody else knows it -------------------------


def _link_from(mail_outbox) -> str:
    [email] = [m for m in mail_outbox if m.subject == "[AccessGov] Choose a new password"]
    match = re.search(r"https?://[^/\s]+(/accounts/recover/[^\s\"<]+/)", email.body)
    assert match, email.body
    return match.group(1)


def _recover_by_link(admins, person, django_capture_on_commit_callbacks, mailoutbox, **extra):
    first, second = admins
    response = as_(first).post(
        reverse("admin:accessgov_user_changelist"), {"action": "send_password_links", "_selected_action": [person.pk]}
    )
    assert response.status_code == 302
    change = ChangeRequest.objects.filter(kind="account_recovery").latest("pk")
    with django_capture_on_commit_callbacks(execute=True):
        changes.change_approve(second, change.pk)
    return change, _link_from(mailoutbox)


def test_a_password_link_is_emailed_once_approved_and_works_once(
    world, admins, django_capture_on_commit_callbacks, mailoutbox
):
    person = world.requester
    open_session = sign_in(Client(), person)
    first, second = admins
    as_(first).post(
        reverse("admin:accessgov_user_changelist"), {"action": "send_password_links", "_selected_action": [person.pk]}
    )
    change = ChangeRequest.objects.get(kind="account_recovery")
    assert change.payload["link_to"] == person.email and change.secret_payload == ""
    page = as_(second).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert f"a one-time link to choose a new one, sent to {person.email}" in page
    assert not mailoutbox and User.objects.get(pk=person.pk).check_password(PASSWORD)  # nothing before approval
    with django_capture_on_commit_callbacks(execute=True):
        changes.change_approve(second, change.pk)
    link = _link_from(mailoutbox)
    [email] = mailoutbox
    assert email.to == [person.email] and "(admin1) asked for it and" in " ".join(email.body.split())
    # The old password is gone and every session ended, before the link is used.
    assert not User.objects.get(pk=person.pk).has_usable_password()
    assert open_session.get(reverse("home"))["Location"].startswith(reverse("accounts:login"))
    browser = Client()
    opened = browser.get(link)
    # The token moves into the session: the form's address carries none (nothing to leak in logs or a Referer).
    form_url = opened["Location"]
    assert opened.status_code == 302 and form_url.endswith("/set-password/") and link.split("/")[4] not in form_url
    form = browser.get(form_url)
    assert form.status_code == 200 and "Choose a new password" in form.content.decode()
    weak = browser.post(form_url, {"new_password1": "short", "new_password2": "short"})
    assert weak.status_code == 400 and "too short" in weak.content.decode()
    assert Client().get(form_url).status_code == 400  # without the session that opened the link: nothing
    done = browser.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse("accounts:login")
    assert User.objects.get(pk=person.pk).check_password(NEW_PASSWORD)
    event = AccessEvent.objects.get(event_type="user.password_set")
    assert event.actor_id == person.pk
    # Spent: a second use (the link again, or the same form) is refused and changes nothing.
    again = Client().get(link)
    assert again.status_code == 400 and "does not work" in again.content.decode()
    replay = browser.post(
        form_url, {"new_password1": "another passphrase 99", "new_password2": "another passphrase 99"}
    )
    assert replay.status_code == 400
    assert User.objects.get(pk=person.pk).check_password(NEW_PASSWORD)
    # Then the usual sign-in: the password, then their authenticator.
    attempt = Client()
    response = attempt.post(reverse("accounts:login"), {"username": person.username, "password": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:otp"))


def test_a_password_link_expires_and_refuses_tampering(
    world, admins, django_capture_on_commit_callbacks, mailoutbox, settings
):
    person = world.requester
    _, link = _recover_by_link(admins, person, django_capture_on_commit_callbacks, mailoutbox)
    _, _, _, uid, token, _ = link.split("/")
    other_uid = link.replace(uid, urlsafe_base64_encode(force_bytes(world.approver.pk)))
    for bad in (
        other_uid,
        link.replace(token, token[:-1] + ("a" if token[-1] != "a" else "b")),
        f"/accounts/recover/!!/{token}/",
    ):
        response = Client().get(bad)
        assert response.status_code == 400 and "does not work" in response.content.decode(), bad
    assert not User.objects.get(pk=person.pk).has_usable_password()
    assert not User.objects.get(pk=world.approver.pk).check_password(NEW_PASSWORD)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 60)):
        assert Client().get(link).status_code == 400
    assert Client().get(link).status_code == 302
    # A verified session may open it too; a password-only one goes to the OTP step first, as on every page.
    assert as_(world.approver).get(link).status_code == 302
    half = Client()
    half.post(reverse("accounts:login"), {"username": world.approver.username, "password": PASSWORD})
    assert half.get(link)["Location"].startswith(reverse("accounts:otp"))


def test_a_link_is_refused_when_the_address_changed_before_approval_and_is_spent_by_deactivation(
    world, admins, make_user, django_capture_on_commit_callbacks, mailoutbox
):
    first, second = admins
    person = world.requester
    as_(first).post(
        reverse("admin:accessgov_user_changelist"), {"action": "send_password_links", "_selected_action": [person.pk]}
    )
    change = ChangeRequest.objects.get(kind="account_recovery")
    User.objects.filter(pk=person.pk).update(email="attacker@example.net")
    with pytest.raises(TransitionNotAllowed, match="email address changed"):
        changes.change_approve(second, change.pk)
    assert User.objects.get(pk=person.pk).check_password(PASSWORD) and not mailoutbox
    # No address: nothing to send a link to.
    nobody = make_user("no-mail", email="")
    with pytest.raises(PolicyViolation, match="no email address"):
        changes.change_propose_account_recovery(first, user=nobody, send_link=True)
    with pytest.raises(PolicyViolation, match="not both"):
        changes.change_propose_account_recovery(first, user=world.approver, send_link=True, password_hash="x")


def test_a_deactivated_account_cannot_use_its_link_and_a_redelivered_email_sends_none_after_use(
    world, admins, django_capture_on_commit_callbacks, mailoutbox
):
    from accessgov import notifications
    from accessgov.services import users as user_services

    person = world.requester
    change, link = _recover_by_link(admins, person, django_capture_on_commit_callbacks, mailoutbox)
    assert notifications.build("account_recovered", change.pk) is not None
    browser = Client()
    form_url = browser.get(link)["Location"]
    browser.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert notifications.build("account_recovered", change.pk) is None  # no fresh link once chosen
    with pytest.raises(TransitionNotAllowed, match="used already"):
        user_services.user_password_set_from_link(person.pk, "yet another passphrase")
    second_person = world.approver
    mailoutbox.clear()
    _, second_link = _recover_by_link(admins, second_person, django_capture_on_commit_callbacks, mailoutbox)
    User.objects.filter(pk=second_person.pk).update(is_active=False)
    assert Client().get(second_link).status_code == 400


def test_an_admin_who_set_the_address_cannot_send_or_approve_a_link_there_and_others_see_it(
    world, admins, make_user, django_capture_on_commit_callbacks, mailoutbox
):
    """The probe's takeover: admin A changes a person's address to theirs, then has a link sent there."""
    from auditlog.context import set_actor

    first, second = admins
    third = make_user("admin3", is_staff=True, is_superuser=True)
    person = world.approver
    with set_actor(first):  # what the admin's user form does (django-auditlog records the actor)
        person.email = "attacker@evil.test"
        person.save()
    with pytest.raises(PolicyViolation, match="You set approver's email address"):
        changes.change_propose_account_recovery(first, user=person, send_link=True)
    # Proposed by someone else, A may not approve it; and whoever approves sees who set the address, and when.
    change = changes.change_propose_account_recovery(second, user=person, send_link=True)
    assert (
        "This address was set on" in change.changes["password"]["new"]
        and "by admin1" in change.changes["password"]["new"]
    )
    with pytest.raises(NotAuthorized, match="the link would go where you chose"):
        changes.change_approve(first, change.pk)
    page = as_(third).get(reverse("change_detail", args=[change.pk])).content.decode()
    assert "This address was set on" in page and "by admin1" in page
    with django_capture_on_commit_callbacks(execute=True):
        changes.change_approve(third, change.pk)
    assert [m.to for m in mailoutbox] == [["attacker@evil.test"]]  # two other admins saw where it goes, and agreed


def test_every_recovery_ends_the_persons_api_tokens_and_tells_them(
    world, admins, django_capture_on_commit_callbacks, mailoutbox
):
    from tests.support.api_helpers import make_token

    first, second = admins
    person = world.requester
    token, _secret = make_token(person)
    change = changes.change_propose_account_recovery(first, user=person, remove_authenticators=True)
    with django_capture_on_commit_callbacks(execute=True):
        changes.change_approve(second, change.pk)
    token.refresh_from_db()
    assert token.revoked_at is not None
    [email] = mailoutbox
    body = " ".join(email.body.split())
    assert email.subject == "[AccessGov] Your account was recovered" and email.to == [person.email]
    assert "your authenticator app and backup codes were removed" in body and "(admin2) approved it" in body
    assert "/accounts/recover/" not in body  # no link: nothing to choose
