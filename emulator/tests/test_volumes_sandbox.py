"""Volumes mounted into sandboxes: uploads are visible inside, writes inside are visible outside."""

from __future__ import annotations

import io

import modal
import pytest


def read_all(vol: modal.Volume, path: str) -> bytes:
    return b"".join(vol.read_file(path))


def run(sb: modal.Sandbox, script: str) -> tuple[int, str, str]:
    p = sb.exec("bash", "-c", script)
    out, err = p.stdout.read(), p.stderr.read()
    return p.wait(), out, err


@pytest.mark.parametrize("version", [1, 2])
def test_volume_round_trip_through_a_sandbox(app, sandbox_api, sandboxes, version: int) -> None:
    vol = modal.Volume.from_name(f"sandbox-vol-{version}-{sandbox_api}", create_if_missing=True, version=version)
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"from outside\n"), "/in/hello.txt")

    sb = modal.Sandbox.create(app=app, volumes={"/data": vol})
    sandboxes.append(sb)

    code, out, err = run(sb, "cat /data/in/hello.txt")
    assert (code, out) == (0, "from outside\n"), err

    code, _, err = run(sb, "mkdir -p /data/out && echo 'written inside' > /data/out/new.txt && sync")
    assert code == 0, err
    sb.reload_volumes()  # what a sandbox calls to see others' commits; must succeed
    vol.commit()
    vol.reload()

    assert [e.path for e in vol.listdir("out")] == ["out/new.txt"]
    assert read_all(vol, "out/new.txt") == b"written inside\n"

    vol.remove_file("in", recursive=True)
    code, out, _ = run(sb, "ls /data")
    assert out.split() == ["out"]


def test_read_only_mount(app, sandboxes) -> None:
    vol = modal.Volume.from_name("sandbox-vol-read-only", create_if_missing=True)
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"shared\n"), "/shared.txt")
    sb = modal.Sandbox.create(app=app, volumes={"/ro": vol.with_mount_options(read_only=True)})
    sandboxes.append(sb)
    code, out, _ = run(sb, "cat /ro/shared.txt")
    assert (code, out) == (0, "shared\n")
    code, _, err = run(sb, "touch /ro/forbidden")
    assert code != 0 and "Read-only file system" in err
    assert [e.path for e in vol.listdir("/")] == ["shared.txt"]


def test_sub_path_mounts(app, sandboxes) -> None:
    """``with_mount_options(sub_path=...)`` as in its reference example; a missing sub_path is created."""
    vol = modal.Volume.from_name("sandbox-vol-sub-path", create_if_missing=True)
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"user data\n"), "/users/my_user/profile.txt")
    sb = modal.Sandbox.create(app=app, volumes={"/user_data": vol.with_mount_options(sub_path="/users/my_user")})
    sandboxes.append(sb)
    code, out, _ = run(sb, "ls /user_data && cat /user_data/profile.txt")
    assert (code, out) == (0, "profile.txt\nuser data\n")

    other = modal.Sandbox.create(app=app, volumes={"/bob": vol.with_mount_options(sub_path="/users/bob")})
    sandboxes.append(other)
    code, _, err = run(other, "echo hi > /bob/note.txt")
    assert code == 0, err
    assert read_all(vol, "users/bob/note.txt") == b"hi\n"


@pytest.mark.parametrize("sub_path", ["../escape", "/users/../../escape", "users/..", "/.."])
def test_sub_path_cannot_leave_the_volume(app, sandboxes, sub_path: str) -> None:
    """A sub_path with ``..`` is refused (INVALID_ARGUMENT), and nothing is created beside the volume."""
    vol = modal.Volume.from_name("sandbox-vol-dotdot", create_if_missing=True)
    with pytest.raises(modal.exception.InvalidError, match="not allowed"):
        sandboxes.append(modal.Sandbox.create(app=app, volumes={"/data": vol.with_mount_options(sub_path=sub_path)}))


def test_sub_path_through_a_symlink_is_refused(app, sandboxes) -> None:
    """A symlink written into the volume by a sandbox cannot redirect a later sub_path mount."""
    vol = modal.Volume.from_name("sandbox-vol-symlink", create_if_missing=True)
    sb = modal.Sandbox.create(app=app, volumes={"/data": vol})
    sandboxes.append(sb)
    code, _, err = run(sb, "ln -s /etc /data/link && mkdir -p /data/real/dir")
    assert code == 0, err
    with pytest.raises(modal.exception.InvalidError, match="not a directory in the volume"):
        sandboxes.append(modal.Sandbox.create(app=app, volumes={"/x": vol.with_mount_options(sub_path="/link/ssl")}))
    ok = modal.Sandbox.create(app=app, volumes={"/x": vol.with_mount_options(sub_path="/real/dir")})
    sandboxes.append(ok)
    code, out, err = run(ok, "touch /x/made && ls /x")
    assert (code, out) == (0, "made\n"), err


def test_unknown_volume_is_not_found(app, sandboxes) -> None:
    vol = modal.Volume.from_name("sandbox-vol-deleted", create_if_missing=True)
    vol.hydrate()
    modal.Volume.objects.delete("sandbox-vol-deleted")
    with pytest.raises(modal.exception.NotFoundError):
        sandboxes.append(modal.Sandbox.create(app=app, volumes={"/data": vol}))
