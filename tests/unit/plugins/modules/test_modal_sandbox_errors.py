# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""modal_sandbox's messages for what users meet on Modal: images that cannot be built or found, refused GPUs."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._provision import (
    CreateFailure,
    build_failure_message,
    build_image,
    create_sandbox,
    gpu_unavailable_message,
)
from ansible_collections.mngr.modal.plugins.module_utils._ssh import INSTALL_HOST_PACKAGES_COMMAND
from ansible_collections.mngr.modal.plugins.modules.modal_sandbox import ModalSandboxModule

# The messages as the SDK raises them against the emulator (ImageBuildError), shortened where they quote the command.
LACKS_ERROR = (
    "Image build for im-57kNxHNRlbidWYX8XND9d0 failed with the exception:\nRUN missing=\"\"; [ -x /usr/sbin/sshd ] "
    "... exited with code 1\nmngr.modal: the image lacks openssh-server python3 ca-certificates and has no apt-get, "
    "apk or dnf to install them\n"
)
UNKNOWN_REFERENCE_ERROR = (
    "Image build for im-hYtLWBtlrig7IfjXKE36uY failed with the exception:\nimage 'registry.example/nope:1' is not "
    "available in the emulator: it builds Debian references (...) itself; import any other image first with "
    "`modal-emulator image import registry.example/nope:1 SOURCE`"
)
RUN_ERROR = ("Image build for im-HeS0DFB2Kf6DsoHXRPllpQ failed with the exception:\nRUN echo step-output && exit 3 "
             "exited with code 3\nstep-output\n")


def test_an_image_without_package_manager_names_the_image_and_what_it_lacks():
    message = build_failure_message("the image example/busybox:1", "example/busybox:1", LACKS_ERROR, [])
    assert message.startswith("the image example/busybox:1 cannot be made ready for Ansible: it lacks "
                              "openssh-server, python3, ca-certificates, and has no apt-get, apk or dnf")
    assert "Image build for" not in message


def test_the_lacking_line_is_found_in_the_build_log_too():
    log = ["Step 2/2 : RUN ...", "mngr.modal: the image lacks python3 and has no apt-get, apk or dnf to install them"]
    message = build_failure_message("the image from /x/Dockerfile", "scratch-based:1",
                                    "Image build for im-1 failed.\nView the build logs", log)
    assert "the image from /x/Dockerfile cannot be made ready for Ansible: it lacks python3," in message


@pytest.mark.parametrize("error", [
    UNKNOWN_REFERENCE_ERROR,
    "Image build for im-1 failed with the exception:\nmanifest unknown: manifest unknown",
    "Image build for im-1 failed with the exception:\npull access denied for nope, repository does not exist",
    "failed to resolve reference \"docker.io/library/nope:1\": not found",
])
def test_an_image_reference_that_does_not_exist_is_named(error):
    message = build_failure_message("the image registry.example/nope:1", "registry.example/nope:1", error, [])
    assert message.startswith("the image reference registry.example/nope:1 could not be found")
    assert "Check the name and the tag" in message and "registry is public" in message
    assert "Image build for" not in message


def test_a_failing_run_step_gives_its_exit_code():
    message = build_failure_message("the image from /x/Dockerfile", "debian:bookworm-slim", RUN_ERROR, [])
    assert message == ("building the image from /x/Dockerfile failed: a build step exited with code 3 (RUN echo "
                       "step-output && exit 3 exited with code 3). Its output is at the end of the build log below")


def test_command_not_found_in_a_run_step_is_not_a_missing_image():
    error = "Image build for im-1 failed with the exception:\nRUN frobnicate exited with code 127\nsh: frobnicate: not found"
    message = build_failure_message("the image from D", "debian:bookworm-slim", error, ["sh: frobnicate: not found"])
    assert message.startswith("building the image from D failed: a build step exited with code 127")


def test_the_builder_s_message_is_shown_without_the_wrappers():
    error = "Modal SDK error (ImageBuildError): " + UNKNOWN_REFERENCE_ERROR
    message = build_failure_message("the image registry.example/nope:1", "registry.example/nope:1", error, [])
    assert "(building the image registry.example/nope:1 failed: image 'registry.example/nope:1' is not available" in message


def test_other_build_failures_keep_modal_s_message():
    message = build_failure_message("the image x:1", "x:1", "Image build for im-1 failed with the exception:\nout of "
                                    "disk space", [])
    assert message == "building the image x:1 failed: out of disk space"


class FakeImage:
    def __init__(self, error=None):
        self.layers = []
        self.error = error

    def run_commands(self, command):
        self.layers.append(command)
        return self

    def build(self, app):
        if self.error:
            raise self.error


class FakeModal:
    def __init__(self, image):
        self.image = image
        self.Image = self  # pylint: disable=invalid-name
        self.Sandbox = self  # pylint: disable=invalid-name
        self.create_errors = []

    def from_registry(self, reference):
        self.reference = reference
        return self.image

    def create(self, *args, **kwargs):
        self.create_kwargs = kwargs
        if self.create_errors:
            raise self.create_errors.pop(0)
        return "sandbox"


class FakeSession:
    key_dir = "/nonexistent"
    app_name = "mngr-modal"
    environment = None
    client = None

    def __init__(self, modal):
        self.modal = modal

    def call(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


class FakeDirectory:
    app = "app"


class FakeModule:
    """Just enough of AnsibleModule for validate_inputs."""

    def __init__(self, **params):
        self.params = {key: None for key in ModalSandboxModule.argument_spec()}
        self.params.update(state="present", purge_tags=False, wait=True, wait_timeout=300, app="mngr-modal")
        self.params.update(params)
        self.check_mode = False


def module_with(fake_image, **params):
    sandbox = ModalSandboxModule(FakeModule(name="web", **params))
    sandbox.validate_inputs()
    sandbox.session = FakeSession(FakeModal(fake_image))
    sandbox.directory = FakeDirectory()
    return sandbox


def build_for(sandbox):
    """The image build a create runs for this module's spec."""
    return build_image(sandbox.session, sandbox.directory.app, sandbox.spec, sandbox.dockerfile_plan)


def create_for(sandbox):
    """The sandbox create a create runs for this module's spec."""
    return create_sandbox(sandbox.session, sandbox.directory.app, FakeImage(), sandbox.spec, "host-1", "web", {})


def test_build_failure_of_an_unready_image_fails_naming_it_with_the_log():
    image = FakeImage(ModalError(LACKS_ERROR.strip(), code=None))
    sandbox = module_with(image, image="example/busybox:1")
    with pytest.raises(CreateFailure) as info:
        build_for(sandbox)
    assert info.value.message.startswith("the image example/busybox:1 cannot be made ready for Ansible: it lacks "
                                         "openssh-server, python3, ca-certificates")


def test_every_host_gets_the_same_packages_layer_so_the_second_build_is_cached():
    first, second = FakeImage(), FakeImage()
    build_for(module_with(first, image="debian:bookworm-slim"))
    build_for(module_with(second, image="debian:bookworm-slim", cpu=2))
    assert first.layers == second.layers == [INSTALL_HOST_PACKAGES_COMMAND]


def test_a_refused_gpu_is_named_with_alternatives():
    sandbox = module_with(FakeImage(), gpu="h100:2")
    refusal = ModalError("Modal API error INVALID_ARGUMENT: H100 is not a valid GPU type", code="INVALID_ARGUMENT")
    sandbox.session.modal.create_errors.append(refusal)
    with pytest.raises(CreateFailure) as info:
        create_for(sandbox)
    message = info.value.message
    assert message.startswith("Modal cannot give the sandbox GPU H100:2 (Modal API error INVALID_ARGUMENT: H100 is not "
                              "a valid GPU type). Choose another GPU type: T4, L4,")
    assert "H200" in message and " H100," not in message and "H100!" not in message
    assert message.endswith("or no GPU. No sandbox was started")
    assert info.value.code == "INVALID_ARGUMENT"


def test_other_create_errors_are_not_blamed_on_the_gpu():
    sandbox = module_with(FakeImage(), gpu="h100")
    other = ModalError("Modal API error INVALID_ARGUMENT: bad timeout", code="INVALID_ARGUMENT")
    sandbox.session.modal.create_errors.append(other)
    with pytest.raises(ModalError, match="bad timeout"):
        create_for(sandbox)
    no_gpu = module_with(FakeImage())
    no_gpu.session.modal.create_errors.append(ModalError("gpu quota", code="INVALID_ARGUMENT"))
    with pytest.raises(ModalError):
        create_for(no_gpu)


def test_gpu_message_with_a_region():
    message = gpu_unavailable_message("A10G", "us-east", ModalError("A10G is not a valid GPU type", code="INVALID_ARGUMENT"))
    assert "GPU A10G in region us-east" in message and "or another region, or none" in message
    assert "A10," in message and "A10G," not in message


def test_timings_are_rounded_seconds_never_negative():
    sandbox = module_with(FakeImage())
    sandbox._time("build", 0.0)  # pylint: disable=protected-access
    assert sandbox.timings["build"] > 0
    sandbox._time("start", 10 ** 9, minus=5)  # pylint: disable=protected-access
    assert sandbox.timings["start"] == 0.0
