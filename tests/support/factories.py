"""Factories for inert data only (users, systems, roles); state comes from services."""

import factory
from django.contrib.auth.hashers import make_password

from accessgov.models import Role, System, User

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.LazyFunction(lambda: make_password(PASSWORD))


class SystemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = System

    name = factory.Sequence(lambda n: f"System {n}")
    slug = factory.Sequence(lambda n: f"system-{n}")


class RoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Role

    system = factory.SubFactory(SystemFactory)
    name = factory.Sequence(lambda n: f"role-{n}")
