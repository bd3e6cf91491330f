"""A score collector leaves no socket file behind in the temp folder."""

from __future__ import annotations

from pathlib import Path

from adapters.score_channel import ScoreCollector, new_ipc_endpoint


def test_closing_a_collector_removes_the_ipc_socket_file_it_bound():
    endpoint = new_ipc_endpoint()
    path = Path(endpoint.removeprefix("ipc://"))
    collector = ScoreCollector(endpoint)
    assert path.exists()  # zmq made it when binding
    collector.close()
    assert not path.exists()


def test_closing_a_collector_whose_socket_file_is_already_gone_succeeds():
    endpoint = new_ipc_endpoint()
    collector = ScoreCollector(endpoint)
    Path(endpoint.removeprefix("ipc://")).unlink()
    collector.close()  # no FileNotFoundError
