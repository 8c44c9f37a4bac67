"""Unit tests of the base image's input hash and rootfs spec, and of mount parsing."""

from pathlib import Path

from devstack.base_image import inputs_hash, rootfs_spec
from devstack.mounts import mounts_below


def test_inputs_hash_changes_with_each_input() -> None:
    base = ("FROM x\n", "3.9.1", b"ca", "spec")
    reference = inputs_hash(*base)

    assert inputs_hash(*base) == reference
    assert inputs_hash("FROM y\n", *base[1:]) != reference
    assert inputs_hash(base[0], "3.9.2", *base[2:]) != reference
    assert inputs_hash(*base[:2], b"other ca", base[3]) != reference
    assert inputs_hash(*base[:3], "other spec") != reference


def test_rootfs_spec_names_packages_and_mirror() -> None:
    spec = rootfs_spec("http://deb.debian.org/debian")

    assert spec == (
        "debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "
        "bookworm http://deb.debian.org/debian"
    )


def test_mounts_below_deepest_first() -> None:
    proc_mounts = r"""/dev/vda / ext4 rw 0 0
proc /state/rootfs/proc proc rw 0 0
sysfs /state/rootfs/sys sysfs rw 0 0
devpts /state/rootfs/dev/pts devpts rw 0 0
proc /state/rootfs-other/proc proc rw 0 0
tmpfs /state/rootfs/with\040space tmpfs rw 0 0
"""

    points = mounts_below(Path("/state/rootfs"), proc_mounts)

    assert points[0] == "/state/rootfs/with space"
    assert set(points) == {
        "/state/rootfs/proc",
        "/state/rootfs/sys",
        "/state/rootfs/dev/pts",
        "/state/rootfs/with space",
    }
