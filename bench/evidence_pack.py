"""Evidence pack for a period of the 1M-event scale dataset (bench/seed_scale.py): build time, peak
memory and offline verification, for the last 91 days and for the whole year (every event), next to a
raw ``COPY … TO STDOUT`` of the same ledger rows measured in the same run. Prints numbers and rewrites its
section of docs/PERFORMANCE.md.

    BENCH_SCALE_DB=accessgov_bench .venv/bin/python bench/evidence_pack.py [--no-write]

Needs the scale database seeded (bench/seed_scale.py). The signing key is made for this run (never kept).
Each build runs in a fresh child process, so its peak resident memory is its own.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import SCALE_DB, measured_on, production_like_env, require_scale_data, write_section  # noqa: E402

TARGET_S, TARGET_MB = 60, 300


def child(days: int) -> None:
    """One build (in this fresh process) and its offline verification; prints one JSON line."""
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from accessgov.evidence import verify
    from accessgov.models import AccessEvent, User
    from accessgov.services import evidence as services

    auditor = User.objects.get(username="bench_auditor")
    until = timezone.now().date()
    since = until - timedelta(days=days - 1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    pack = services.evidence_pack_request(auditor, since=since, until=until, queue=False)
    pack = services.evidence_pack_build(pack.pk)
    build_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if pack.status != "ready":
        raise SystemExit(f"the build failed: {pack.error}")
    path = Path(settings.EVIDENCE_DIR) / pack.file_name
    ledger = pack.summary["ledger"]
    # Baseline: PostgreSQL writing the same ledger rows as CSV, no Python per row.
    t0 = time.perf_counter()
    copied = 0
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY (SELECT * FROM accessgov_accessevent WHERE sequence BETWEEN %s AND %s ORDER BY sequence) "
            "TO STDOUT WITH (FORMAT csv)",
            [ledger["first_sequence"], ledger["last_sequence"]],
        ) as copy,
    ):
        for chunk in copy:
            copied += len(chunk)
    copy_s = time.perf_counter() - t0
    public = settings.EVIDENCE_SIGNING_KEY
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(public.encode(), password=None).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    t0 = time.perf_counter()
    report, _ = verify.verify_pack(str(path), public_key_pem=pem)
    verify_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "days": days,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "events": ledger["events"],
                "rows": {k: v["rows"] for k, v in pack.summary["populations"].items()},
                "build_s": build_s,
                "rss_before_mb": rss_before,
                "peak_mb": peak_mb,
                "size_mb": path.stat().st_size / 1e6,
                "copy_s": copy_s,
                "copy_mb": copied / 1e6,
                "verify_s": verify_s,
                "verified": report.ok,
                "problems": report.problems[:3],
                "total_events": AccessEvent.objects.count(),
            }
        )
    )
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if args.child:
        production_like_env(SCALE_DB)
        child(args.child)
        return
    production_like_env(SCALE_DB)
    require_scale_data()
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    env = {**os.environ, "EVIDENCE_SIGNING_KEY": key.decode(), "EVIDENCE_DIR": str(ROOT / "var" / "bench" / "evidence")}
    results = []
    load_before = os.getloadavg()[0]
    for days in (91, 365):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(days)], env=env, capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise SystemExit(out.stdout + out.stderr)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    for r in results:
        r["load"] = (load_before, os.getloadavg()[0])
    report = render(results)
    print(report)
    if not args.no_write:
        write_section(report, "evidence_pack")


def render(results: list[dict]) -> str:
    lines = [
        f"### Evidence pack on the scale dataset ({results[0]['total_events']:,} events, "
        f"{results[-1]['rows']['grants']:,} grants in the year)",
        "",
        f"{measured_on()}; "
        "`bench/evidence_pack.py` (the service an auditor's request runs, in a fresh process: snapshot read, ZIP, "
        "summary and PDF, signature), then the offline verifier on the file. Load average "
        f"{results[0]['load'][0]:.1f} at the start, {results[0]['load'][1]:.1f} at the end (2 cores shared with "
        "other work: the times grow with it).",
        "",
        "| period | ledger events in the pack | grants / requests / removals | build | peak memory (process) | "
        "pack size | verify offline | baseline: raw COPY of the same events | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows = r["rows"]
        lines.append(
            f"| {r['since']} to {r['until']} ({r['days']} days) | {r['events']:,} | {rows['grants']:,} / "
            f"{rows['requests']:,} / {rows['removals']:,} | {r['build_s']:.1f} s | {r['peak_mb']:.0f} MB "
            f"(at start {r['rss_before_mb']:.0f} MB) | {r['size_mb']:.0f} MB | {r['verify_s']:.1f} s, "
            f"{'passes' if r['verified'] else 'FAILS'} | {r['copy_s']:.1f} s ({r['copy_mb']:.0f} MB) | "
            f"≤ {TARGET_S} s, < {TARGET_MB} MB |"
        )
    lines += [
        "",
        "Ratio build / raw COPY: "
        + ", ".join(f"{r['build_s'] / r['copy_s']:.1f}× ({r['days']} days)" for r in results)
        + ". The raw COPY only moves the ledger rows; the build also re-hashes every event, writes ten populations "
        "with their control tests, the sample with trails, the HTML and PDF summary, and compresses and hashes "
        "every file.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
