"""Querysets compiled once per database connection and run again with new values.

Building and compiling a queryset costs Django 0.5-0.8 ms per statement, and PostgreSQL plans each
client-bound statement again (another 0.3-0.5 ms): most of a small page's time went there, not into
reading rows (docs/PERFORMANCE.md, issue 22). A ``Precompiled`` keeps the queryset as the one definition
of the read — written with the ORM, returned by ``queryset(**values)`` for anyone who needs a queryset —
and for the hot pages runs the SQL Django compiled for it, with the caller's values put where Django
put the compiled-in stand-ins, through a server-bound cursor (PostgreSQL prepares it after five runs)
and Django's own row converters and related-object populators.

What may vary is declared: each named value is an ``int``, an aware ``datetime`` or a ``str`` that the
queryset uses as a plain bound parameter, or a ``list`` of integers that it uses through the ``anyof``
lookup (``dbsql.AnyOf``: the whole list is one bound parameter). The shape is checked when first compiled: the queryset is
compiled with two different sets of stand-ins and must give the same SQL with every stand-in at the same
parameter positions — a value the ORM inlines, transforms (``icontains``), expands (``__in`` a list) or
uses to choose the SQL is refused there (``NotPrecompilable``), never substituted wrongly.
``tests/services/test_precompiled.py`` runs every registered instance against its queryset.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import get_related_populators  # type: ignore[attr-defined]

from accessgov import dbsql

REGISTRY: list["Precompiled"] = []

# Two sets of stand-ins no real value takes: negative 32-bit integers, timestamps in 1901/1902, and marked
# strings, each distinct within its set.
_INT_BASE = (-2_000_000_000, -1_900_000_000)
_DATETIME_YEAR = (1901, 1902)


class NotPrecompilable(Exception):
    """The queryset's SQL depends on a value, or a value is not a plain bound parameter."""


class Precompiled:
    """A read whose SQL is compiled once per connection: ``.list(**values)`` returns the model instances
    (``select_related`` objects and annotations included) or ``values_list()`` tuples
    ``list(.queryset(**values))`` would,
    ``.count(**values)`` and ``.exists(**values)`` what the queryset's ``count()`` and ``exists()`` would."""

    def __init__(self, name: str, build: Callable[..., QuerySet], /, *, register: bool = True, **kinds: type) -> None:
        for kind in kinds.values():
            if kind not in (int, datetime, str, list):
                raise NotPrecompilable(f"{name}: values must be int, datetime, str or list (of ints), not {kind!r}")
        self.name, self.build, self.kinds = name, build, kinds
        if register:  # the registered reads are the ones tests/services/test_precompiled.py compares
            REGISTRY.append(self)

    def __repr__(self) -> str:
        return f"<Precompiled {self.name}>"

    def queryset(self, **values: Any) -> QuerySet:
        """The ORM twin: the same read as a queryset."""
        return self.build(**values)

    def list(self, *, using: str = "default", **values: Any) -> list[Any]:
        return self._compiled(using, "list").run(values)

    def count(self, *, using: str = "default", **values: Any) -> int:
        return self._compiled(using, "count").run(values)[0][0]

    def exists(self, *, using: str = "default", **values: Any) -> bool:
        return bool(self._compiled(using, "exists").run(values)[0][0])

    def _compiled(self, using: str, mode: str) -> "_Compiled":
        wrapper = connections[using]
        cache = wrapper.__dict__.setdefault("_accessgov_precompiled", {})
        compiled = cache.get((self, mode))
        if compiled is None:
            compiled = cache[self, mode] = _Compiled(self, wrapper, mode)
        return compiled


def _stand_ins(kinds: dict[str, type], which: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for index, (name, kind) in enumerate(sorted(kinds.items())):
        if kind is int:
            values[name] = _INT_BASE[which] - 7919 * (index + 1)
        elif kind is list:
            values[name] = [_INT_BASE[which] - 7919 * (index + 1) - 1, _INT_BASE[which] - 7919 * (index + 1) - 2]
        elif kind is datetime:
            values[name] = datetime(_DATETIME_YEAR[which], 2, 3, 4, 5, 6, 1000 + index, tzinfo=UTC)
        else:
            values[name] = f"\x1fprecompiled:{which}:{index}\x1f"
    return values


class _Compiled:
    """One precompiled read on one connection: its SQL, its parameters with the slots to fill, and (for
    model instances) the compiler state that turns rows into models: selected columns, related-object
    populators, converters."""

    def __init__(self, precompiled: Precompiled, wrapper, mode: str) -> None:
        self.wrapper, self.kinds, self.mode = wrapper, precompiled.kinds, mode
        name = precompiled.name
        shapes = []
        for which in (0, 1):
            stand_ins = _stand_ins(precompiled.kinds, which)
            queryset = precompiled.build(**stand_ins)
            if queryset._prefetch_related_lookups or queryset._known_related_objects:  # type: ignore[attr-defined]
                raise NotPrecompilable(f"{name}: prefetch_related and known related objects are not supported")
            kind = queryset._iterable_class.__name__
            # values_list() tuples are the compiled columns as they come (annotations included); extra()
            # selects are not (Django trims them).
            plain_values = kind == "ValuesListIterable" and not queryset.query.extra_select
            if mode == "list" and kind != "ModelIterable" and not plain_values:
                raise NotPrecompilable(f"{name}: only model instances and plain values_list() tuples are listed")
            compiler = queryset.query.get_compiler(connection=wrapper)
            sql, params = compiler.as_sql()
            adapted = {
                value_name: self._adapt(value, self.kinds[value_name]) for value_name, value in stand_ins.items()
            }
            slots = []
            for position, param in enumerate(params):
                found = [n for n, a in adapted.items() if type(param) is type(a) and param == a]
                if found:
                    slots.append((position, found[0]))
            missing = set(stand_ins) - {n for _, n in slots}
            if missing:
                raise NotPrecompilable(f"{name}: {', '.join(sorted(missing))} not found among the bound parameters")
            filled = {position for position, _ in slots}
            shapes.append((sql, slots, [None if i in filled else param for i, param in enumerate(params)]))
        if shapes[0] != shapes[1]:
            raise NotPrecompilable(f"{name}: the SQL or its parameters depend on the values")
        self.sql, self.slots, self.params = shapes[0]
        if mode == "count":
            self.sql = f"SELECT COUNT(*) FROM ({self.sql}) precompiled"  # noqa: S608 - Django's compiled SQL
        elif mode == "exists":
            self.sql = f"SELECT EXISTS({self.sql})"
        if mode != "list":
            return
        self.compiler = compiler
        fields = [selected[0] for selected in compiler.select[0 : compiler.col_count]]
        self.converters = compiler.get_converters(fields)
        self.width = compiler.col_count if compiler.has_extra_select else None
        self.tuples = plain_values
        if plain_values:
            return
        klass_info = compiler.klass_info
        self.model = klass_info["model"]
        select_fields = klass_info["select_fields"]
        self.model_slice = slice(select_fields[0], select_fields[-1] + 1)
        self.init_list = [selected[0].target.attname for selected in compiler.select[self.model_slice]]
        self.related_populators = get_related_populators(klass_info, compiler.select, wrapper.alias)
        self.annotations = list((compiler.annotation_col_map or {}).items())

    def _adapt(self, value, kind: type):
        if kind is list:
            return dbsql.int_array_param(value, self.wrapper)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise NotPrecompilable("datetimes must be aware")
            return self.wrapper.ops.adapt_datetimefield_value(value)
        return value

    def run(self, values: dict[str, Any]) -> list[Any]:
        if values.keys() != self.kinds.keys():
            raise TypeError(f"expected the values {sorted(self.kinds)}, got {sorted(values)}")
        params = list(self.params)
        for position, name in self.slots:
            value, kind = values[name], self.kinds[name]
            if kind is int:
                value = int(value)
            elif kind is str:
                value = str(value)
            elif kind is datetime and not isinstance(value, datetime):
                raise TypeError(f"{name} must be a datetime")
            params[position] = self._adapt(value, kind)
        with dbsql.prepared_cursor(self.wrapper) as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.mode != "list":
            return rows
        if self.width is not None:
            rows = [row[: self.width] for row in rows]
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        if self.tuples:
            return [tuple(row) for row in rows]
        alias, model, init_list, model_slice = self.wrapper.alias, self.model, self.init_list, self.model_slice
        objects = []
        for row in rows:
            obj = model.from_db(alias, init_list, row[model_slice])
            for populator in self.related_populators:
                populator.populate(row, obj)
            for attr_name, position in self.annotations:
                setattr(obj, attr_name, row[position])
            objects.append(obj)
        return objects
