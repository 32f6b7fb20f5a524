"""--ray-address that is not a Ray cluster: refused within seconds with a message (a silent or
a Redis-like TCP service made the build wait 150 s, deaf to Ctrl-C); IPv6 addresses parse."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from converters.distributed.ray_executor import check_reachable, host_and_port, refused_token


@pytest.fixture()
def service() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A TCP service on loopback; the test sets what it replies (nothing: a silent one)."""
    server = socket.create_server(("127.0.0.1", 0))
    replies: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(64)
                if replies:
                    connection.sendall(replies[0])
                time.sleep(6 if not replies else 0)

    threading.Thread(target=serve, daemon=True).start()
    yield server, replies
    server.close()


def address(server: socket.socket) -> str:
    return f"127.0.0.1:{server.getsockname()[1]}"


def test_a_silent_service_is_not_a_ray_cluster(service: tuple[socket.socket, list[bytes]]) -> None:
    server, _ = service
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"accepts connections but does not answer as a Ray "
                                              r"cluster \(no gRPC reply in 5 s\)"):
        check_reachable(address(server))
    assert time.monotonic() - started < 8


def test_a_redis_like_service_is_not_a_ray_cluster(service: tuple[socket.socket, list[bytes]]) -> None:
    server, replies = service
    replies.append(b"-ERR unknown command 'PRI'\r\n")
    with pytest.raises(ConnectionError, match=r"answers, but not as a Ray cluster \(not gRPC: it "
                                              r"replied b'-ERR unkn'\)"):
        check_reachable(address(server))


def test_a_grpc_server_passes(service: tuple[socket.socket, list[bytes]]) -> None:
    server, replies = service
    replies.append(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00")  # what Ray 2.60's GCS replied
    check_reachable(address(server))


def test_nothing_listening_is_named() -> None:
    with pytest.raises(ConnectionError, match=r"nothing answers at 127\.0\.0\.1:1 "):
        check_reachable("127.0.0.1:1")


def test_ipv6_addresses() -> None:
    assert host_and_port("[::1]:6379") == ("::1", 6379)
    assert host_and_port("head.example:6379") == ("head.example", 6379)
    assert host_and_port("ray://head:10001") is None
    with pytest.raises(ConnectionError, match=r"nothing answers at \[::1\]:1 "):
        check_reachable("[::1]:1")
    with pytest.raises(ValueError, match="IPv6 address without brackets: write"):
        check_reachable("::1:6379")


def test_a_refused_token_is_recognised_through_rays_chained_errors() -> None:
    from ray.exceptions import AuthenticationError

    try:
        try:
            raise AuthenticationError("InvalidAuthToken: Authentication token is incorrect")
        except AuthenticationError as cause:  # what ray.init raises, from that cause
            raise ConnectionError("Failed to connect to Ray cluster") from cause
    except ConnectionError as error:
        assert refused_token(error)
    assert not refused_token(ConnectionError("Failed to connect to Ray cluster"))
    try:  # Ray 2.60's chain: the refusal survives only as text in a RuntimeError
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback ... "
                               "RPC error: InvalidAuthToken: Authentication token is incorrect")
        except RuntimeError as text:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from text
    except ConnectionError as error:
        assert refused_token(error)
