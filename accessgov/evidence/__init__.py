"""Evidence packs (issue 21): one signed bundle per period and scope that an auditor can verify offline.

- ``populations``: what each CSV holds (the read side; one class per population, a registry to extend).
- ``controls``: the control map (SOC 2, ISO 27001, PCI DSS) and the tests computed from the populations.
- ``ledger``: the period's extract of the hash-chained ledger, re-verified while it is written.
- ``summary``: the readable summary (HTML with inline SVG charts, and PDF via ReportLab).
- ``builder``: writes the ZIP (hashing every file as it streams), the manifest and its signature.
- ``signing``: the operator's Ed25519 key; ``delivery``: directory and S3-compatible delivery.
- ``verify``: the auditor's standalone verifier (standard library + ``cryptography`` only; no Django).

State changes (requesting, building, delivering, downloading) are services in ``services.evidence``.
The file format and every column are documented in docs/EVIDENCE.md.
"""
