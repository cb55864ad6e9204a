# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""Dockerfiles replayed as image layers: read a single-stage Dockerfile and plan one layer per instruction.

Modal builds an image layer from a few Dockerfile lines (``Image.dockerfile_commands``). A host's Dockerfile
is therefore cut into its instructions, each replayed as its own cached layer on top of the image of the
``FROM`` line, with the ``ARG`` values it needs. Everything here except :func:`dockerfile_image` is pure
logic, tested without Modal.
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple


class DockerfilePlan(NamedTuple):
    """What to build: the ``FROM`` image, the layers (each a list of Dockerfile lines) and warnings for the user."""

    base: str
    steps: list[list[str]]
    warnings: list[str]


class DockerfileError(ValueError):
    """A Dockerfile that cannot be replayed; the message names the line and what to do."""


def dockerfile_instructions(text: str) -> list[str]:
    """Logical instructions of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    instructions: list[str] = []
    current = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line
        if current.strip():
            instructions.append(current.strip())
        current = ""
    if current.strip():
        instructions.append(current.strip())
    return instructions


_ARG_RE = re.compile(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$", re.IGNORECASE)
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def plan_dockerfile(text: str, build_args: dict[str, str]) -> DockerfilePlan:
    """(base image, layers to replay, warnings) for a single-stage Dockerfile.

    Each layer is one instruction, preceded by the ``ARG`` lines declared before it: every layer is built
    as its own small Dockerfile, and an ARG is in scope for the rest of the stage, so it has to be repeated
    (an ARG line changes no file, so the layer still holds exactly one instruction's changes).
    ``ARG`` lines named in ``build_args`` are rewritten to carry the given value (an ARG before ``FROM`` is
    substituted into the ``FROM`` line); a build arg the file does not declare is an error.
    """
    instructions = dockerfile_instructions(text)
    froms = [i for i in instructions if i.split(None, 1)[0].upper() == "FROM"]
    if not froms:
        raise DockerfileError("the Dockerfile has no FROM line")
    if len(froms) > 1:
        raise DockerfileError(
            f"multi-stage Dockerfiles are not supported (found {len(froms)} FROM lines: "
            f"{'; '.join(froms)}): build the final stage only, or publish the earlier stage as an image"
        )
    declared = []
    for instruction in instructions:
        match = _ARG_RE.match(instruction)
        if match:
            declared.append(match.group(1))
    unknown = sorted(set(build_args) - set(declared))
    if unknown:
        raise DockerfileError(
            f"docker build arg {', '.join(unknown)} is not declared by an ARG line in the Dockerfile "
            f"(declared: {', '.join(declared) or 'none'})"
        )
    global_args: dict[str, str] = {}
    base = ""
    args_in_scope: list[str] = []
    steps: list[list[str]] = []
    warnings: list[str] = []
    seen_from = False
    for instruction in instructions:
        keyword = instruction.split(None, 1)[0].upper()
        match = _ARG_RE.match(instruction)
        if match:
            name, default = match.group(1), match.group(2)
            value = build_args.get(name, default)
            if not seen_from:
                global_args[name] = value or ""
                continue
            args_in_scope.append(f"ARG {name}={value}" if value is not None else f"ARG {name}")
            continue
        if keyword == "FROM":
            seen_from = True
            words = instruction.split()[1:]
            words = [w for w in words if not w.startswith("--platform")]
            if not words:
                raise DockerfileError(f"cannot read the image of {instruction!r}")
            base = _VAR_RE.sub(lambda m: global_args.get(m.group(1) or m.group(2), ""), words[0])
            if not base or "$" in base:
                raise DockerfileError(f"cannot resolve the image of {instruction!r}")
            continue
        if keyword in ("COPY", "ADD") and re.search(r"\s--from=", instruction):
            raise DockerfileError(f"{instruction!r} copies from another stage or image: multi-stage builds are not supported")
        if keyword in ("CMD", "ENTRYPOINT"):
            warnings.append(f"Dockerfile {keyword} is ignored ({instruction!r}): the host runs sshd and what you start over SSH")
            continue
        if keyword in ("ONBUILD", "HEALTHCHECK", "STOPSIGNAL", "SHELL", "VOLUME", "EXPOSE", "MAINTAINER", "LABEL"):
            if keyword in ("SHELL", "ONBUILD"):
                raise DockerfileError(f"Dockerfile instruction {keyword} is not supported ({instruction!r})")
            continue
        steps.append(args_in_scope + [instruction])
    return DockerfilePlan(base, steps, warnings)


def load_dockerfile(dockerfile: str, context_dir: str | None, build_args: dict[str, str] | None) -> DockerfilePlan:
    """Read the Dockerfile at ``dockerfile`` (on the controller) and plan its layers; DockerfileError if unusable.

    ``context_dir`` (default: the Dockerfile's folder) must exist, because ``COPY`` and ``ADD`` read from it.
    """
    path = os.path.abspath(dockerfile)
    if not os.path.isfile(path):
        raise DockerfileError(f"dockerfile {dockerfile} does not exist on the controller")
    context = context_dir or os.path.dirname(path)
    if not os.path.isdir(context):
        raise DockerfileError(f"context_dir {context} is not a folder on the controller")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return plan_dockerfile(text, build_args or {})


def dockerfile_image(modal: Any, plan: DockerfilePlan, context_dir: str) -> Any:
    """The ``modal.Image`` of a plan: the base image, then one ``dockerfile_commands`` layer per step."""
    image = modal.Image.from_registry(plan.base)
    for step in plan.steps:
        image = image.dockerfile_commands(step, context_dir=context_dir)
    return image
