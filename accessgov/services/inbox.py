"""The inbox's read marks (issue 18, item 7): the only inbox state that is stored. A person marks their
own items read; nobody else's (the item is looked up among the person's own, so another person's id is
"no such item")."""

from django.db.models import Max

from accessgov import inbox
from accessgov.models import InboxReadMark, User


def inbox_item_mark_read(user: User, event_id: int) -> bool:
    """Mark one "what happened" item of ``user`` read (idempotent). Returns False, marking nothing, when
    the event is not an item of theirs (the view answers 404: no existence oracle)."""
    if not inbox.happened_events(user).filter(pk=event_id).exists():
        return False
    InboxReadMark.objects.get_or_create(user=user, event_id=event_id)
    return True


def inbox_mark_all_read(user: User) -> None:
    """Everything in ``user``'s inbox up to now counts as read: the read mark moves to their newest item
    (one UPDATE; the per-item marks below it are no longer needed and are dropped)."""
    newest = inbox.happened_events(user).aggregate(newest=Max("sequence"))["newest"] or 0
    if newest > user.inbox_read_through:
        User.objects.filter(pk=user.pk, inbox_read_through__lt=newest).update(inbox_read_through=newest)
        user.inbox_read_through = newest
        InboxReadMark.objects.filter(user=user).delete()
