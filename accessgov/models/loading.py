"""Model instances read from the database without ``Model.__init__`` (issue 22).

Django builds each row's instance through ``__init__``, which walks every concrete field of the model
(and, for a row read with ``only()``, first builds the full value list with placeholders): a list page's
≈ 200 instances of wide models (roles, systems, users) cost ≈ 2 ms there, a third of its query's time in
Python. ``from_db`` here returns the same instance — the loaded fields' values in its ``__dict__`` (the
others deferred, read on access as usual), not adding, bound to the database it came from — in one
step. Django's own path is taken whenever a receiver listens to ``pre_init`` or ``post_init`` for the
model (those signals would otherwise be skipped). ``AccessGovConfig.ready`` gives it to every model of
the app; ``tests/services/test_model_loading.py`` compares it with Django's for every one of them."""

from django.db.models import Model
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init


def from_db(cls, db, field_names, values):
    """``Model.from_db``'s instance, built directly (attnames and values as Django's iterators pass them)."""
    if pre_init.has_listeners(cls) or post_init.has_listeners(cls):
        return Model.from_db.__func__(cls, db, field_names, values)
    new = cls.__new__(cls)
    state = new._state = ModelState()
    state.adding, state.db = False, db
    new.__dict__.update(zip(field_names, values, strict=True))
    return new
