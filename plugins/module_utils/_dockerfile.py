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

from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError


class DockerfilePlan(NamedTuple):
    """What to build: the ``FROM`` image, the layers (each a list of Dockerfile lines) and warnings for the user."""

    base: str
    steps: list[list[str]]
    warnings: list[str]


class DockerfileError(ModalCollectionError, ValueError):
    """A Dockerfile that cannot be replayed; the message names the line and what to do."""


_DIRECTIVE_RE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_ESCAPES = ("\\", "`")
# A heredoc marker word: <<EOT, <<-EOT, <<"EOT", <<'EOT' (optionally after a file descriptor, 2<<EOT).
_HEREDOC_RE = re.compile(r"""^\d*<<(-?)(["']?)([^\s<>'"]+)\2$""")
_HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
_OWN_ESCAPE_INSTRUCTIONS = ("RUN", "CMD", "ENTRYPOINT")  # shell text passed on as is: no word processing
_RUN_FLAGS_RE = re.compile(r"^((?:--\S+\s+)*)(.*)$", re.DOTALL)


def parser_directives(text: str) -> dict[str, str]:
    """The parser directives (``# syntax=...``, ``# escape=...``) at the top of a Dockerfile, names lowercased.

    As in Docker, directives are only read before the first comment, blank line or instruction; later
    they are comments. A repeated directive or an escape other than backslash or backtick is an error.
    """
    directives: dict[str, str] = {}
    for line in text.splitlines():
        match = _DIRECTIVE_RE.match(line.strip())
        if not match or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in directives:
            raise DockerfileError(f"the Dockerfile parser directive {name} is given twice ({line.strip()!r})")
        directives[name] = value
    escape = directives.get("escape", "\\")
    if escape not in _ESCAPES:
        raise DockerfileError(
            f"the Dockerfile parser directive '# escape={escape}' is not valid: the escape character must be "
            "a backslash (the default) or a backtick"
        )
    return directives


def dockerfile_instructions(text: str) -> list[str]:
    """Logical instructions of a Dockerfile: continuation lines joined, comments and blank lines dropped.

    The escape character of ``# escape=`` ends continued lines. A ``RUN`` with heredocs (``RUN <<EOT``
    ... ``EOT``) becomes one single-line ``RUN`` that runs the same shell text (see :func:`heredoc_run`),
    so that every builder replays it as Docker does.
    """
    escape = parser_directives(text).get("escape", "\\")
    lines = text.splitlines()
    instructions: list[str] = []
    current = ""
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if line.startswith("#") or (not current and not line):
            continue  # comments (and the parser directives) and blank lines between instructions
        if line.endswith(escape):
            current += line[:-1].rstrip() + " "
            continue
        instruction = (current + line).strip()
        current = ""
        if instruction:
            _check_escapes(instruction, escape)
            heredocs = _heredoc_markers(instruction)
            if heredocs:
                bodies, index = _read_heredoc_bodies(instruction, heredocs, lines, index)
                instruction = heredoc_run(instruction, heredocs, bodies)
            instructions.append(instruction)
    if current.strip():
        instructions.append(current.strip())
    return instructions


def _check_escapes(instruction: str, escape: str) -> None:
    """Refuse what the replay would read differently: it sends each instruction with the default escape."""
    keyword = instruction.split(None, 1)[0].upper()
    if escape == "`" and keyword not in _OWN_ESCAPE_INSTRUCTIONS and re.search(r"[\\`]", instruction):
        raise DockerfileError(
            f"{instruction!r} has a backslash or backtick under '# escape=`': only RUN, CMD and ENTRYPOINT lines "
            "may use them with that directive; remove the directive (use backslash continuations) or the character"
        )


def _heredoc_markers(instruction: str) -> list[tuple[str, bool]]:
    """(delimiter, strip leading tabs) of each heredoc an instruction opens, in order; [] for none."""
    words = instruction.split()
    if words[0].upper() not in _HEREDOC_INSTRUCTIONS:
        return []
    markers = []
    for word in words[1:]:
        match = _HEREDOC_RE.match(word)
        if match:
            markers.append((match.group(3), match.group(1) == "-"))
    if markers and words[0].upper() != "RUN":
        raise DockerfileError(
            f"{instruction!r}: heredocs in {words[0].upper()} are not supported; put the content in a file of "
            "the build context, or write it with a RUN heredoc (RUN cat <<EOT > /path ... EOT)"
        )
    return markers


def _read_heredoc_bodies(
    instruction: str, markers: list[tuple[str, bool]], lines: list[str], index: int
) -> tuple[list[list[str]], int]:
    """The raw body lines of each heredoc, read from ``lines[index:]``, and the index after the last one."""
    bodies = []
    for delimiter, strip_tabs in markers:
        body: list[str] = []
        while True:
            if index >= len(lines):
                raise DockerfileError(f"{instruction!r}: the heredoc {delimiter} has no closing {delimiter} line")
            line = lines[index]
            index += 1
            if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                break
            body.append(line)
        bodies.append(body)
    return bodies, index


def heredoc_run(instruction: str, markers: list[tuple[str, bool]], bodies: list[list[str]]) -> str:
    """A single-line ``RUN`` that runs what Docker runs for a ``RUN`` with heredocs.

    Docker runs ``RUN <<EOT`` (one heredoc that is the whole command) as a script file made of the
    body, so a ``#!`` line picks its interpreter; any other heredoc ``RUN`` (``RUN <<EOT bash``,
    ``RUN cat <<EOT > file``) hands the whole text, bodies and closing lines included, to the shell.
    The text is carried in a ``printf`` format (newlines as ``\\n``), which every builder reads as one line.
    """
    keyword, rest = instruction.split(None, 1)
    flags, command = _RUN_FLAGS_RE.match(rest).groups()  # RUN's own flags (--mount=...) stay RUN's
    prefix = f"{keyword} {flags}".rstrip()
    if len(markers) == 1 and len(command.split()) == 1:
        delimiter, strip_tabs = markers[0]
        body = [line.lstrip("\t") for line in bodies[0]] if strip_tabs else bodies[0]
        script = _printf_format("\n".join(body) + "\n")
        path = f"/tmp/dockerfile-heredoc-{delimiter}-$$"
        return (
            f'{prefix} f="{path}" && printf \'{script}\' > "$f" && chmod 755 "$f" && "$f"; '
            'status=$?; rm -f "$f"; exit $status'
        )
    text = [command]
    for (delimiter, _strip_tabs), body in zip(markers, bodies):
        text += body + [delimiter]
    return f'{prefix} eval "$(printf \'{_printf_format(chr(10).join(text))}\')"'


def _printf_format(text: str) -> str:
    """``text`` as a single-quoted ``printf`` format that prints it back: no newline, quote or % left as is."""
    return text.replace("\\", "\\\\").replace("%", "%%").replace("\n", "\\n").replace("'", "\\047")


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
    warnings: list[str] = _directive_warnings(parser_directives(text))
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


def _directive_warnings(directives: dict[str, str]) -> list[str]:
    """A warning for a ``# syntax=`` frontend other than Docker's: its own features are not replayed."""
    syntax = directives.get("syntax", "")
    if syntax and not re.match(r"^(docker\.io/)?docker/dockerfile(:|@|$)", syntax):
        return [
            f"Dockerfile '# syntax={syntax}' is not used: the instructions are replayed as Docker's own "
            "Dockerfile syntax (with heredocs), so features of that frontend are not available"
        ]
    return []


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
