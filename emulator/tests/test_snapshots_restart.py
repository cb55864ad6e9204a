"""Filesystem snapshots, and what a restarted emulator still knows (images, snapshots, apps, secrets)."""

from __future__ import annotations

import modal
import pytest

from sdk_harness import point_sdk_at, restore_env


def test_snapshot_restore_keeps_files(app, sandbox_api, sandboxes) -> None:
    sb = modal.Sandbox.create(app=app)
    sandboxes.append(sb)
    sb.exec("bash", "-c", "mkdir -p /data && echo kept > /data/file && echo home > /root/note").wait()
    image = sb.snapshot_filesystem()
    assert image.object_id.startswith("im-")
    sb.terminate()
    restored = modal.Sandbox.create(app=app, image=image)
    sandboxes.append(restored)
    assert restored.exec("cat", "/data/file", "/root/note").stdout.read() == "kept\nhome\n"
    by_id = modal.Sandbox.create(app=app, image=modal.Image.from_id(image.object_id))
    sandboxes.append(by_id)
    assert by_id.exec("cat", "/data/file").stdout.read() == "kept\n"


def test_unknown_image_id(app) -> None:
    with pytest.raises(Exception, match="not found"):
        modal.Sandbox.create(app=app, image=modal.Image.from_id("im-doesnotexist0000000000"))


# Runs last in this module: it restarts the module's server.
def test_state_survives_restart(emulator, app, sandboxes, tmp_path) -> None:
    secret = modal.Secret.from_dict({"KEY": "v"})
    modal.Secret.objects.create("emulator-restart-secret", {"NAMED": "yes"}, allow_existing=True)
    built = modal.Image.debian_slim().run_commands("echo from-build > /built").build(app)
    sb = modal.Sandbox.create(app=app, secrets=[secret])
    sandboxes.append(sb)
    sb.exec("bash", "-c", "echo snap > /snapfile").wait()
    snapshot = sb.snapshot_filesystem()
    old_id = sb.object_id

    emulator.stop()
    emulator.start()
    previous = point_sdk_at(emulator.url, tmp_path / "config")
    try:
        again = modal.App.lookup("emulator-tests")
        assert again.app_id == app.app_id
        old = modal.Sandbox.from_id(old_id)
        assert old.returncode == 137  # its processes died with the old server: reported as terminated
        restored = modal.Sandbox.create(
            app=again,
            image=modal.Image.from_id(snapshot.object_id),
            secrets=[modal.Secret.from_name("emulator-restart-secret")],
        )
        sandboxes.append(restored)
        assert restored.exec("bash", "-c", "cat /snapfile; echo $NAMED").stdout.read() == "snap\nyes\n"
        rebuilt = modal.Sandbox.create(app=again, image=modal.Image.from_id(built.object_id))
        sandboxes.append(rebuilt)
        assert rebuilt.exec("cat", "/built").stdout.read() == "from-build\n"
    finally:
        restore_env(previous)
        point_sdk_at(emulator.url, tmp_path / "config2")
