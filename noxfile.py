"""Development sessions: ``nox -s tests``, ``lint``, ``typing``, ``demo``, ``bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def install(session: nox.Session, *groups: str) -> None:
    deps = [dep for group in groups for dep in nox.project.dependency_groups(PYPROJECT, group)]
    session.install("-e", ".", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: unit tests, real servers on 127.0.0.1, asyncio and trio."""
    install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the library, the tests and the examples."""
    install(session, "typing")
    session.run("mypy", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Serve the chat example on http://127.0.0.1:8000/ (pass ``-- -k trio`` for the trio worker)."""
    install(session, "demo")
    session.log("Open http://127.0.0.1:8000/ and publish with:")
    session.log(
        "  curl -X POST http://127.0.0.1:8000/api/publish "
        """-d '{"event": "message", "data": {"user": "curl", "text": "hello"}}'"""
    )
    session.run("hypercorn", "examples.raw_asgi:app", "--bind", "127.0.0.1:8000", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The performance harness: fan-out through real servers beside its peers, then in-process.

    ``nox -s bench`` runs every scenario (3 interleaved rounds, about 20 minutes on 2 cores)
    and writes benchmarks/results/fanout.json and fanout.md; pass options through, e.g.
    ``nox -s bench -- --rounds 1 --scenario 100x2000x100B``.
    """
    install(session, "bench")
    session.run("python", "-m", "benchmarks.fanout", *session.posargs)
    if not session.posargs:
        session.run("python", "-m", "benchmarks.inprocess_fanout")
        session.run("python", "-m", "benchmarks.empty_publish")


@nox.session(name="bench_broker")
def bench_broker(session: nox.Session) -> None:
    """The Valkey/Redis broker (needs Debian's redis-server): throughput, latency, fan-out, memory."""
    install(session, "test")
    session.run("python", "-m", "benchmarks.broker", *session.posargs)


@nox.session(name="bench_grip")
def bench_grip(session: nox.Session) -> None:
    """Publish throughput through a private Pushpin (needs Debian's pushpin), batching on and off."""
    install(session, "test")
    session.run("python", "-m", "benchmarks.grip_throughput", *session.posargs)
