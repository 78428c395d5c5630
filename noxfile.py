"""Development sessions: ``nox -s tests``, ``unit``, ``lint``, ``typing``, ``docs``, ``verifytypes``,
``demo``, ``bench``."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def install(session: nox.Session, *groups: str) -> None:
    deps = [dep for group in groups for dep in nox.project.dependency_groups(PYPROJECT, group)]
    session.install("-e", ".", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: unit tests, real servers on 127.0.0.1, asyncio and trio.

    In parallel (pytest-xdist): a test file per worker, one worker per core and one more,
    since end-to-end tests spend much of their time waiting on servers, engines and
    browsers. ``-- -n 0`` runs it in this process.
    """
    install(session, "test")
    workers = str((os.cpu_count() or 1) + 1)
    session.run("pytest", "-n", workers, "--dist", "loadfile", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """The edit loop: tests/unit only, in-process (no server, engine, proxy or browser), under a minute.

    In parallel as ``tests`` is (many unit tests wait on their own deadlines); ``-- -n 0``
    runs it in this process.
    """
    install(session, "test")
    workers = str((os.cpu_count() or 1) + 1)
    session.run("pytest", "tests/unit", "-n", workers, "--dist", "loadfile", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check; vulture: no dead code in the library (see vulture_whitelist.py)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    paths = ["src", "tests", "examples", "benchmarks", "docs/conf.py", "noxfile.py", "vulture_whitelist.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("vulture")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the library, the tests and the examples."""
    install(session, "typing")
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, docs/ to docs/_build/html; any Sphinx warning fails it."""
    install(session, "docs")
    session.run(
        "sphinx-build", "-E", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html", *session.posargs
    )


@nox.session
def verifytypes(session: nox.Session) -> None:
    """pyright --verifytypes: every name of the public API has a complete, declared type."""
    install(session, "verifytypes")
    session.run("pyright", "--verifytypes", "eventstream", "--ignoreexternal")


def demo_command(bind: str, *args: str) -> list[str]:
    """The server the demo session runs: one process (``--workers 0``), so Ctrl+C reaches the app."""
    return ["hypercorn", "examples.raw_asgi:app", "--bind", bind, "--workers", "0", *args]


@nox.session
def demo(session: nox.Session) -> None:
    """Serve the chat example on http://127.0.0.1:8000/ (pass ``-- -k trio`` for the trio worker).

    Ctrl+C stops it at once, open streams included. ``EVENTSTREAM_DEMO_BIND``
    (default ``127.0.0.1:8000``) changes the address.
    """
    install(session, "demo")
    bind = os.environ.get("EVENTSTREAM_DEMO_BIND", "127.0.0.1:8000")
    session.log(f"Open http://{bind}/, or read the stream: curl -N http://{bind}/api/events")
    session.log("and publish with:")
    session.log(
        f"  curl -X POST http://{bind}/api/publish "
        """-d '{"event": "message", "data": {"user": "curl", "text": "hello"}}'"""
    )
    session.log(f"Probes: http://{bind}/healthz, http://{bind}/readyz; metrics: http://{bind}/metrics")
    session.run(*demo_command(bind, *session.posargs))


@nox.session
def bench(session: nox.Session) -> None:
    """The performance harness: fan-out through real servers beside its peers, then in-process.

    ``nox -s bench`` runs every scenario but the opt-in 100,000 streams (3 interleaved
    rounds, about 45 minutes on 2 cores) and writes benchmarks/results/fanout.json and
    fanout.md; pass options through, e.g. ``nox -s bench -- --rounds 1 --scenario paced-20k``.
    """
    install(session, "bench")
    # The anchor, the JavaScript original on Express (needs node and npm).
    session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", "benchmarks/node", external=True)
    session.run("python", "-m", "benchmarks.fanout", *session.posargs)
    if not session.posargs:
        session.run("python", "-m", "benchmarks.stalled_publish")
        session.run("python", "-m", "benchmarks.delivery_cpu")
        session.run("python", "-m", "benchmarks.idle_memory")
        session.run("python", "-m", "benchmarks.idle_memory", "--sites", "--servers", "uvicorn")
        session.run("python", "-m", "benchmarks.inprocess_fanout")
        session.run("python", "-m", "benchmarks.empty_publish")
        session.run("python", "-m", "benchmarks.feed_share")
        session.run("python", "-m", "benchmarks.feed_share", "--scenario", "churn")
        session.run("python", "-m", "benchmarks.cluster")
        session.run("python", "-m", "benchmarks.scrape")
        session.run("python", "-m", "benchmarks.tracing")


@nox.session(name="bench_broker")
def bench_broker(session: nox.Session) -> None:
    """The Valkey/Redis broker (needs Debian's redis-server): throughput, latency, fan-out, memory.

    Without arguments, also an engine that accepts and never answers (benchmarks.silent_engine).
    """
    install(session, "test")
    session.run("python", "-m", "benchmarks.broker", *session.posargs)
    if not session.posargs:
        session.run("python", "-m", "benchmarks.silent_engine")


@nox.session(name="bench_grip")
def bench_grip(session: nox.Session) -> None:
    """Publish throughput through a private Pushpin (needs Debian's pushpin), batching on and off."""
    install(session, "test")
    session.run("python", "-m", "benchmarks.grip_throughput", *session.posargs)
