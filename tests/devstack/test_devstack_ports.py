"""Unit tests of port checks and the port-in-use message."""

import socket

from devstack.ports import (
    PortOwner,
    format_command,
    listening_inodes,
    port_in_use_message,
    port_is_free,
)

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1
   1: 0100007F:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1
   2: 0100007F:1388 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4444 1
   3: 00000000:1068 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4545 1
"""


def test_listening_inodes_only_listen_state() -> None:
    assert listening_inodes(PROC_NET_TCP, 5000) == {"4242"}
    assert listening_inodes(PROC_NET_TCP, 5001) == {"4343"}
    assert listening_inodes(PROC_NET_TCP, 4200) == {"4545"}
    assert listening_inodes(PROC_NET_TCP, 5002) == set()


def test_message_names_port_part_and_owner() -> None:
    owner = PortOwner(1234, "python3 -m http.server ...")

    message = port_in_use_message(5000, "registry", owner)

    assert message.startswith("port 5000 is already in use (by pid 1234 python3 -m http.server ...)")
    assert "the registry cannot start" in message
    assert "stop that process" in message


def test_message_without_known_owner() -> None:
    message = port_in_use_message(4200, "prefect server", None)

    assert message.startswith("port 4200 is already in use, so the prefect server")


def test_format_command_keeps_three_words() -> None:
    assert format_command(["/usr/bin/python3", "-m", "http.server", "5000"]) == ("python3 -m http.server ...")
    assert format_command(["/usr/bin/docker-registry"]) == "docker-registry"
    assert format_command([]) == "?"


def test_port_is_free_sees_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        assert not port_is_free(port)

    assert port_is_free(port)
