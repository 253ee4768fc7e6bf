"""Issue 22: every model of the app is read by ``models.loading.from_db``, which gives the instance
Django's ``Model.from_db`` gives — same values, same deferred fields, same state — for any set of loaded
fields, and steps aside when something listens to the init signals."""

import random

import pytest
from django.apps import apps
from django.db.models import Model
from django.db.models.signals import post_init

from accessgov.models import Role, loading
from tests.support.factories import RoleFactory

MODELS = list(apps.get_app_config("accessgov").get_models())


def _django(model, names, values):
    return Model.from_db.__func__(model, "default", names, values)


def _state(obj) -> tuple:
    values = {k: v for k, v in vars(obj).items() if k != "_state"}
    return (type(obj), values, obj.get_deferred_fields(), obj._state.adding, obj._state.db, obj._state.fields_cache)


def _field_sets(model, rng) -> list[list]:
    """The loaded field sets a query can give: all, only the key, and random ``only()`` sets (key first,
    in the model's order, as Django's iterators pass them)."""
    fields = model._meta.concrete_fields
    others = [f for f in fields if not f.primary_key]
    sets = [list(fields), [model._meta.pk]]
    for _ in range(6):
        chosen = set(rng.sample(others, rng.randint(0, len(others))))
        sets.append([f for f in fields if f.primary_key or f in chosen])
    return sets


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_model_is_read_as_django_would(model):
    assert model.from_db.__func__ is loading.from_db
    rng = random.Random(model.__name__)  # the same sets on every run
    for fields in _field_sets(model, rng):
        names = [f.attname for f in fields]
        values = [object() for _ in names]  # what Django stores, unchanged: any value will do
        assert _state(loading.from_db(model, "default", names, values)) == _state(_django(model, names, values))


def test_a_wrong_row_is_refused():
    with pytest.raises(ValueError):
        loading.from_db(Role, "default", ["id", "name"], [1])


@pytest.mark.django_db
def test_instances_read_with_only_behave_as_djangos(world):
    RoleFactory()
    role_id = world.role.pk
    role = Role.objects.only("name").get(pk=role_id)
    assert role.get_deferred_fields() >= {"description", "system_id"}
    assert role.system.name == world.system.name  # a deferred field, loaded on access
    role.name = "renamed"
    role.save()  # saves the loaded field only (Django's rule for deferred instances)
    fresh = Role.objects.get(pk=role_id)
    assert (fresh.name, fresh.description) == ("renamed", world.role.description)
    fresh.refresh_from_db(fields=["name"])
    assert Role.objects.get(pk=role_id) == fresh and not fresh._state.adding
    loaded = Role.objects.select_related("system").only("name", "system__name").order_by("pk")
    assert (
        [(r.pk, r.name, r.system.name, r.risk_tier) for r in loaded]
        == [(r.pk, r.name, r.system.name, r.risk_tier) for r in Role.objects.order_by("pk")]
        != []
    )


@pytest.mark.django_db
def test_init_signal_receivers_still_hear_every_instance(world):
    heard = []

    def receiver(sender, instance, **kwargs):
        heard.append(instance.pk)

    post_init.connect(receiver, sender=Role)
    try:
        roles = list(Role.objects.only("name"))
    finally:
        post_init.disconnect(receiver, sender=Role)
    assert heard == [r.pk for r in roles] != []
