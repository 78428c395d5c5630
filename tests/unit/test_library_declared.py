"""declare_running_library: an asyncio task that nothing declared gets sniffio's answer set once;
trio, a task anyio.run started, and code outside any event loop are left as they are."""

from __future__ import annotations

import asyncio

import anyio
import sniffio
import trio

from eventstream._backends import declare_running_library


def test_an_undeclared_asyncio_task_is_declared_and_the_tasks_it_starts_inherit_it() -> None:
    async def child() -> str | None:
        return sniffio.current_async_library_cvar.get()

    async def main() -> tuple[str | None, str | None, str | None]:
        before = sniffio.current_async_library_cvar.get()  # as under an ASGI server: nobody said
        declare_running_library()
        after = sniffio.current_async_library_cvar.get()
        return before, after, await asyncio.create_task(child())

    assert asyncio.run(main()) == (None, "asyncio", "asyncio")
    assert sniffio.current_async_library_cvar.get() is None  # only that task's context


def test_trio_anyio_run_and_no_event_loop_are_left_alone() -> None:
    async def under_trio() -> str | None:
        declare_running_library()
        return sniffio.current_async_library_cvar.get()

    assert trio.run(under_trio) is None  # trio says it itself (sniffio's thread-local)

    async def under_anyio() -> str:
        declare_running_library()
        return sniffio.current_async_library()

    assert anyio.run(under_anyio) == "asyncio"
    declare_running_library()  # no event loop: nothing to declare
    assert sniffio.current_async_library_cvar.get() is None
