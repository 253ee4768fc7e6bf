"""What a list page costs with no framework work at all: the floor under the page target (issue 22).

The grants list (50 of the scale dataset's 100,000 grants, newest first) as each of two viewers sees it —
the auditor (every grant) and the approver of 5 systems (their own grants and their roles') — served
through the same middleware stack, signed in, on the same connection, alternated round by round:

- the page: ``/grants/`` as the portal serves it (filterset, form, ORM, Django templates, Jinja2 rows);
- the floor: a bench-only view (``bench/floor_urls.py``, never part of the product) that does only what
  no implementation of this page can skip — the viewer's scope, catalogue and the navigation's badge reads,
  the 51 rows by one hand-written SQL statement (the viewer's visibility rule in its WHERE) read as tuples,
  and the rows rendered by one Jinja2 template with the same helpers (``when``, ``status``) — while the
  rest of the page (the auditor's 94 kB: navigation, the filter form with its 1,200 options, headings,
  pager) is the page's own HTML pasted in as literal text. Floor and page must show the same grants in the same order, or the bench stops.

Two steps between them say where the gap goes: the floor after building the page's filterset, and the
floor with the page's filterset and ORM read (model instances) instead of the hand-written SQL. The health
check is the baseline (the signed-in stack with one trivial query). The gap between page and floor is what
the framework costs; the floor is what would remain if every list page were hand-written.

    .venv/bin/python bench/page_floor.py [--rounds 4] [--repeat 40] [--no-write]
"""

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    SCALE_DB,
    measured_on,
    production_like_env,
    require_scale_data,
    stolen_seconds,
    verified_client,
    write_section,
)

production_like_env(SCALE_DB)

VIEWERS = (("auditor (sees everything)", "bench_auditor"), ("approver of 5 systems", "bench_approver"))
GRANT_IDS = re.compile(r'<a href="/grants/(\d+)/">#')
URLS = (
    ("health check (baseline)", "/healthz"),
    ("floor: hand-written SQL, literal HTML around Jinja2 rows", "/floor/grants/"),
    ("floor + the page's filterset", "/floor/filterset/"),
    ("floor + the page's filterset and ORM read", "/floor/orm/"),
    ("the page (+ Django templates for all but the rows)", "/grants/"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import django

    django.setup()
    from django.test import override_settings

    import portal.wsgi  # noqa: F401 - what a gunicorn worker runs at start-up
    from accessgov.models import User
    from bench import floor_urls

    require_scale_data()
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    stolen_before, started = stolen_seconds(), time.perf_counter()
    with override_settings(ROOT_URLCONF="bench.floor_urls"):
        for who, username in VIEWERS:
            user = User.objects.get(username=username)
            client = verified_client(user)
            page = client.get("/grants/").content.decode()
            floor_urls.use_page_around_rows(user.pk, page)
            floor = client.get("/floor/grants/").content.decode()
            sizes[who] = (len(page.encode()), len(floor.encode()))
            shown = GRANT_IDS.findall(page)
            for url in ("/floor/grants/", "/floor/filterset/", "/floor/orm/"):
                if (ids := GRANT_IDS.findall(client.get(url).content.decode())) != shown:
                    raise SystemExit(
                        f"{who}: {url} shows grants {ids[:5]}… ({len(ids)}), the page {shown[:5]}… ({len(shown)})"
                    )
            for round_number in range(args.rounds):
                for label, url in URLS:
                    for _ in range(3):
                        client.get(url)
                    key = (who, url)
                    for _ in range(args.repeat):
                        c0, t0 = time.process_time(), time.perf_counter()
                        response = client.get(url)
                        wall.setdefault(key, []).append(time.perf_counter() - t0)
                        cpu.setdefault(key, []).append(time.process_time() - c0)
                        if response.status_code != 200:
                            raise SystemExit(f"{url} answered {response.status_code}")
                    print(
                        f"{who:26} round {round_number + 1}  {label:56} p50 {statistics.median(wall[key][-args.repeat :]) * 1e3:6.2f} ms"
                        f"  CPU {statistics.median(cpu[key][-args.repeat :]) * 1e3:6.2f} ms",
                        flush=True,
                    )
    stolen = (stolen_seconds() - stolen_before) / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    report = render(args, wall, cpu, sizes, stolen)
    print(report)
    if not args.no_write:
        write_section(report, "page_floor")


def render(args, wall, cpu, sizes: dict[str, tuple[int, int]], stolen: float) -> str:
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.1f} ms"

    def spread(values: list[float]) -> str:
        rounds = [statistics.median(values[i : i + args.repeat]) * 1e3 for i in range(0, len(values), args.repeat)]
        return f"{min(rounds):.1f}–{max(rounds):.1f} ms"

    lines = [
        "### The floor under a list page: the grants list with no framework work, for both viewers",
        "",
        f"{measured_on()}; "
        f"`bench/page_floor.py`, {args.rounds} rounds of {args.repeat} GETs each, alternated, through the whole "
        "middleware stack (Django test client); floor and page show the same grants in the same order. "
        + "; ".join(f"{who}: the page {page:,} bytes, the floor {floor:,}" for who, (page, floor) in sizes.items())
        + f". CPU time stolen by the host during the run: {stolen:.0%}.",
        "",
        "| viewer | served | p50 (all rounds) | round medians | CPU in the process, p50 | step |",
        "|---|---|---|---|---|---|",
    ]
    summary = []
    for who, _ in VIEWERS:
        previous = None
        for label, url in URLS:
            values = wall[(who, url)]
            step = f"+{(statistics.median(values) - previous) * 1e3:.1f} ms" if previous is not None else ""
            lines.append(f"| {who} | {label} | {ms(values)} | {spread(values)} | {ms(cpu[(who, url)])} | {step} |")
            previous = statistics.median(values) if url != "/healthz" else None
        page, floor = statistics.median(wall[(who, "/grants/")]), statistics.median(wall[(who, "/floor/grants/")])
        health = statistics.median(wall[(who, "/healthz")])
        summary.append(
            f"- {who}: the floor is {floor / page:.0%} of the page ({floor * 1e3:.1f} against {page * 1e3:.1f} ms; "
            f"{(page - floor) * 1e3:.1f} ms of framework work: the filterset, the ORM, the Django templates); "
            f"{(floor - health) * 1e3:.1f} ms above the health check."
        )
    return "\n".join([*lines, "", *summary])


if __name__ == "__main__":
    main()
