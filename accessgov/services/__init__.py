"""The write side: the only code that changes state. Each transition: transaction → lock → authorize
→ validate → write (update_fields) → one AccessEvent → side effects on commit (ids only)."""
