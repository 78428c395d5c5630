"""Which engine replies the broker retries, and which tell a cluster's batch to go slot by slot.

The messages are those valkey-glide raises (seen against redis-server 7.0, one engine and a cluster
mid-failover); the exceptions are valkey-glide's own classes.
"""

from __future__ import annotations

import glide
import pytest

from eventstream._redis._connect import misrouted, transient


@pytest.mark.parametrize(
    "message",
    [
        "An error was signalled by the server: - Moved: 3965 127.0.0.1:47747",
        "An error was signalled by the server: - Ask: 3965 127.0.0.1:47747",
        "An error was signalled by the server: - TryAgain: Multiple keys request during rehashing of slot",
        "An error was signalled by the server: - ClusterDown: The cluster is down",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script",
        "MASTERDOWN Link with MASTER is down",
        "READONLY You can't write against a read only replica.",
        "Script attempted to execute a command while the cluster is down",
    ],
)
def test_replies_that_say_not_now_are_retried(message: str) -> None:
    assert transient(glide.RequestError(message), glide)


@pytest.mark.parametrize(
    "message",
    [
        "ERR Error running script (call to f_1): user_script:1: bad argument",
        "NOSCRIPT No matching script",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "BUSYGROUP Consumer Group name already exists",
        "NOPERM this user has no permissions to run the 'evalsha' command",
        "a task was asked to stop",
    ],
)
def test_other_errors_are_not_retried(message: str) -> None:
    assert not transient(glide.RequestError(message), glide)


def test_connection_failures_are_retried_and_a_closed_client_is_not() -> None:
    assert transient(glide.ConnectionError("connection refused"), glide)
    assert transient(glide.TimeoutError("timed out"), glide)
    assert not transient(glide.ClosingError("the client is closed"), glide)


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        ("An error was signalled by the server: - ResponseError: Script attempted to access a non local key "
         "in a cluster node script: 8ab1d0, on @user_script:2.", True),
        ("An error was signalled by the server: - Moved: 3965 127.0.0.1:47747", True),
        ("CrossSlot: Keys in request don't hash to the same slot", True),
        ("Script attempted to access keys that do not hash to the same slot", True),
        ("ERR Error running script: user_script:1: bad argument", False),
        ("OOM command not allowed when used memory > 'maxmemory'", False),
    ],
)  # fmt: skip
def test_a_batch_refused_for_its_keys_goes_slot_by_slot(message: str, refused: bool) -> None:
    assert misrouted(message) is refused
