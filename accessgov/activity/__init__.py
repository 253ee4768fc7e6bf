"""Activity evidence (issue 17): pure helpers (classification, log parsing, capture settings), the
PostgreSQL-side capture statements, the read side (selectors) and seal verification. The writers are in
``accessgov.services.activity``; the data model is ``accessgov.models.activity`` (documented there)."""
