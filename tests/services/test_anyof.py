"""Issue 22: ``__anyof`` (a list of ids bound as one parameter, ``dbsql.AnyOf``) selects exactly what
``__in`` selects, on both databases, and lets nothing but integers into SQL."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessgov.models import Role
from tests.support.factories import RoleFactory, SystemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def roles():
    systems = [SystemFactory(), SystemFactory()]
    return [RoleFactory(system=systems[n % 2]) for n in range(5)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.one_of(st.integers(0, 6), st.integers(-(2**63), 2**63 - 1)), max_size=8))
def test_anyof_selects_what_in_selects(roles, picks):
    # Indexes 0-4 pick existing roles (and their systems); anything else is an id that may not exist.
    role_ids = [roles[p].pk if 0 <= p < 5 else p for p in picks]
    system_ids = [roles[p].system_id if 0 <= p < 5 else p for p in picks]
    assert set(Role.objects.filter(pk__anyof=role_ids)) == set(Role.objects.filter(pk__in=role_ids))
    # a foreign key, by its attname and by its name
    expected = set(Role.objects.filter(system_id__in=system_ids))
    assert set(Role.objects.filter(system_id__anyof=system_ids)) == expected
    assert set(Role.objects.filter(system__anyof=system_ids)) == expected
    # negated, and in an OR (where ``__in`` of an empty list drops its branch)
    assert set(Role.objects.exclude(pk__anyof=role_ids)) == set(Role.objects.exclude(pk__in=role_ids))
    either = Role.objects.filter(pk=roles[0].pk) | Role.objects.filter(pk__anyof=role_ids)
    assert set(either) == {roles[0], *Role.objects.filter(pk__in=role_ids)}


@pytest.mark.parametrize("bad", [["1"], [1.5], [None], ["1; DROP TABLE accessgov_role"], [2**63], [-(2**63) - 1]])
def test_anyof_takes_integers_only(roles, bad):
    with pytest.raises((TypeError, ValueError)):
        list(Role.objects.filter(pk__anyof=bad))
    assert Role.objects.count() == 5
