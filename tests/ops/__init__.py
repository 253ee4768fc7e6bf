"""Operations: real worker and scheduler processes, fault injection, deploy shape, health, logs, docs, CLI."""
