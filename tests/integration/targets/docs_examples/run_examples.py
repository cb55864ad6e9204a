# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Run every playbook that the guides in docs/*.md mark as runnable, against the Modal API at MODAL_SERVER_URL.

Markers, each on its own line right before a fenced code block (blank lines in between are allowed):

* ``<!-- runnable -->`` before a ```` ```yaml ```` block: a complete playbook. The runnable playbooks of one guide
  run in the order they appear, in one working folder, so a guide can build on its earlier examples.
* ``<!-- runnable rerun-unchanged -->``: the same, and the playbook then runs a second time, which must report
  ``changed=0`` for every host (for a guide that promises that running it again changes nothing).
* ``<!-- runnable-file: PATH -->`` before any block: its text is written to PATH (relative to the guide's working
  folder) before the playbooks that follow it run, for the files a playbook reads (a Dockerfile, an inventory).

Each guide gets its own Modal app (MNGR_MODAL_APP) and key folder (MNGR_MODAL_KEY_DIR), so guides never see each
other's hosts; playbooks must therefore not set ``app:`` themselves. After a guide's last playbook, cleanup.yml
destroys every host left in its app and deletes its snapshot records. A guide fails when a playbook fails (the
rest of that guide is skipped) or when hosts were left behind: examples must clean up after themselves.

Exit status 0 only when every runnable playbook of every guide ran and passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import typing as t
from dataclasses import dataclass, field

import yaml

MARKER = re.compile(r"^<!--\s*runnable(?:-file:\s*(?P<path>\S+)|\s+(?P<rerun>rerun-unchanged))?\s*-->\s*$")
RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=\d+\s+changed=(?P<changed>\d+)\s")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[A-Za-z0-9_+-]*)")
PLAYBOOK_NAME = re.compile(r"^#\s*(?P<name>[A-Za-z0-9_.-]+\.ya?ml)\s*$")
SETS_APP = re.compile(r"^\s*app\s*:", re.MULTILINE)
PLAYBOOK_TIMEOUT_SECONDS = 900
LOG_TAIL_LINES = 60
HERE = os.path.dirname(os.path.abspath(__file__))
# ansible-test's settings for its own target runs that a user's ansible-playbook would not have.
NOT_A_USER_SETTING = ("ANSIBLE_PYTHON_INTERPRETER", "ANSIBLE_INVENTORY", "ANSIBLE_HOST_PATTERN_MISMATCH")


class ExampleError(Exception):
    """A guide whose markers or runnable blocks cannot be used as they are."""


@dataclass
class Block:
    """One marked block of a guide."""

    guide: str
    line: int
    text: str
    file_path: str | None = None   # set for runnable-file blocks
    rerun_unchanged: bool = False  # run twice; the second run must change nothing
    name: str = ""                 # playbook file name

    @property
    def where(self) -> str:
        return f"{self.guide}:{self.line}"


@dataclass
class GuideResult:
    guide: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def extract_blocks(path: str) -> list[Block]:
    """The marked blocks of one guide, in order. Raises ExampleError for a marker not followed by a block."""
    guide = os.path.basename(path)
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        marker = MARKER.match(lines[index].strip())
        if not marker:
            index += 1
            continue
        start = index + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        fence = FENCE.match(lines[start]) if start < len(lines) else None
        if fence is None:
            raise ExampleError(f"{guide}:{index + 1}: a runnable marker must be followed by a fenced code block")
        file_path = marker.group("path")
        if file_path is None and fence.group("lang") not in ("yaml", "yml"):
            raise ExampleError(f"{guide}:{start + 1}: a runnable playbook must be a ```yaml block")
        end = start + 1
        while end < len(lines) and not lines[end].startswith(fence.group("fence")):
            end += 1
        if end >= len(lines):
            raise ExampleError(f"{guide}:{start + 1}: the code block never ends")
        blocks.append(Block(guide, start + 1, "\n".join(lines[start + 1:end]) + "\n", file_path,
                            rerun_unchanged=marker.group("rerun") is not None))
        index = end + 1
    return blocks


def check_playbook(block: Block, number: int) -> None:
    """A runnable block must be a complete playbook that does not pick its own app; also name its file."""
    first = block.text.lstrip().splitlines()[0] if block.text.strip() else ""
    named = PLAYBOOK_NAME.match(first)
    block.name = named.group("name") if named else f"example-{number:02d}.yml"
    try:
        plays = yaml.safe_load(block.text)
    except yaml.YAMLError as exc:
        raise ExampleError(f"{block.where}: not valid YAML: {exc}") from None
    if not isinstance(plays, list) or not plays or not all(isinstance(play, dict) and "hosts" in play for play in plays):
        raise ExampleError(f"{block.where}: a runnable block must be a playbook: a list of plays, each with hosts:")
    if SETS_APP.search(block.text):
        raise ExampleError(f"{block.where}: a runnable playbook must not set app: (each guide runs in its own app, "
                           "given by MNGR_MODAL_APP)")


def safe_file_path(block: Block, workdir: str) -> str:
    path = os.path.normpath(os.path.join(workdir, block.file_path or ""))
    if os.path.isabs(block.file_path or "") or not path.startswith(workdir + os.sep):
        raise ExampleError(f"{block.where}: runnable-file path {block.file_path!r} must stay inside the working folder")
    return path


def modal_settings(config_path: str | None) -> dict[str, str]:
    """MODAL_* settings from integration_config.yml (written by the test runner), else from the environment."""
    settings: dict[str, str] = {}
    if config_path and os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        settings.update({key: str(value) for key, value in (config.get("modal_env") or {}).items()})
    for key in ("MODAL_SERVER_URL", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_CONFIG_PATH"):
        if key not in settings and os.environ.get(key):
            settings[key] = os.environ[key]
    missing = [key for key in ("MODAL_SERVER_URL", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET") if key not in settings]
    if missing:
        raise ExampleError(f"no {', '.join(missing)}: give --config integration_config.yml or set them in the environment")
    return settings


def find_docs(explicit: str | None) -> str:
    """The docs folder: --docs, else the one of the mngr.modal collection on ANSIBLE_COLLECTIONS_PATH."""
    if explicit:
        return explicit
    for root in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep):
        candidate = os.path.join(root, "ansible_collections", "mngr", "modal", "docs")
        if root and os.path.isdir(candidate):
            return candidate
    raise ExampleError("cannot find the collection's docs folder: give --docs")


def run_playbook(playbook: str, workdir: str, env: dict[str, str], log_path: str,
                 extra_args: t.Sequence[str] = ()) -> bool:
    """Run one playbook; its whole output goes to log_path. True when it passed."""
    command = ["ansible-playbook", playbook, *extra_args]
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            completed = subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=PLAYBOOK_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            log.write(f"\n*** timed out after {PLAYBOOK_TIMEOUT_SECONDS} s ***\n")
            return False
    return completed.returncode == 0


def changed_hosts(log_path: str) -> list[str]:
    """The hosts that the PLAY RECAP of a playbook's log shows with changed > 0."""
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        matches = [RECAP_LINE.match(line) for line in handle]
    return [match.group("host") for match in matches if match and int(match.group("changed"))]


def show_tail(label: str, log_path: str) -> None:
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    print(f"--- {label}: last {min(len(lines), LOG_TAIL_LINES)} lines of {log_path} ---")
    print("\n".join(lines[-LOG_TAIL_LINES:]))
    print("---")


def test_app_prefix(config_path: str | None) -> str | None:
    """The run's app name from integration_config.yml (modal_test_app), when the runner gives one."""
    if not config_path or not os.path.exists(config_path):
        return None
    with open(config_path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    return str(config["modal_test_app"]) if config.get("modal_test_app") else None


def run_guide(guide_path: str, blocks: list[Block], work_root: str, settings: dict[str, str],
              app_prefix: str | None = None) -> GuideResult:
    """Run one guide's marked blocks in order in a fresh folder and app, then clean that app up."""
    guide = os.path.basename(guide_path)
    stem = re.sub(r"[^a-z0-9-]+", "-", os.path.splitext(guide)[0].lower()).strip("-")
    result = GuideResult(guide)
    workdir = os.path.join(work_root, stem)
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    # A test run that names its apps (tools/test_modal.sh) finds them again to clean up: <prefix>-docs-<guide>.
    app = f"{app_prefix}-docs-{stem}" if app_prefix else f"docs-{stem}-{time.time_ns()}"
    env = {key: value for key, value in os.environ.items() if key not in NOT_A_USER_SETTING}
    env.update(settings)
    env.update(MNGR_MODAL_APP=app, MNGR_MODAL_KEY_DIR=os.path.join(workdir, "keys"))
    if "MODAL_CONFIG_PATH" not in settings:
        env["MODAL_CONFIG_PATH"] = os.path.join(workdir, "modal.toml")
        open(env["MODAL_CONFIG_PATH"], "a", encoding="utf-8").close()
    print(f"== {guide}: app {app}, folder {workdir}", flush=True)
    failed = False
    try:
        for block in blocks:
            if block.file_path is not None:
                path = safe_file_path(block, workdir)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(block.text)
                continue
            label = f"{block.where} {block.name}"
            if failed:
                result.skipped.append(label)
                continue
            with open(os.path.join(workdir, block.name), "w", encoding="utf-8") as handle:
                handle.write(block.text)
            started = time.monotonic()
            log_path = os.path.join(workdir, block.name + ".log")
            passed = run_playbook(block.name, workdir, env, log_path)
            if passed and block.rerun_unchanged:
                log_path = os.path.join(workdir, block.name + ".rerun.log")
                passed = run_playbook(block.name, workdir, env, log_path)
                changed = changed_hosts(log_path) if passed else []
                if changed:
                    passed = False
                    print(f"   its second run changed {', '.join(changed)}; the guide says it changes nothing",
                          flush=True)
            if passed:
                result.passed.append(label)
                print(f"   ok      {label} ({time.monotonic() - started:.1f} s)", flush=True)
            else:
                failed = True
                result.failed.append(label)
                print(f"   FAILED  {label}", flush=True)
                show_tail(label, log_path)
    finally:
        leftovers_file = os.path.join(workdir, "leftovers.json")
        log_path = os.path.join(workdir, "cleanup.log")
        if not run_playbook(os.path.join(HERE, "cleanup.yml"), workdir, env, log_path,
                            ["-e", json.dumps({"leftovers_file": leftovers_file})]):
            result.problems.append("the cleanup of its app failed")
            show_tail(f"{guide} cleanup", log_path)
        elif not failed:
            with open(leftovers_file, encoding="utf-8") as handle:
                leftovers = json.load(handle)
            if leftovers:
                result.problems.append(f"its examples left hosts behind: {', '.join(leftovers)} "
                                       "(the cleanup destroyed them; an example must clean up after itself)")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--docs", help="folder of the guides (default: the collection's docs/)")
    parser.add_argument("--config", help="integration_config.yml with modal_env (default: the environment)")
    parser.add_argument("--work", required=True, help="folder for the playbooks, their logs and key folders")
    parser.add_argument("guides", nargs="*", help="only these guides (file names, e.g. quickstart.md)")
    args = parser.parse_args()
    try:
        docs = find_docs(args.docs)
        settings = modal_settings(args.config)
        guides: list[tuple[str, list[Block]]] = []
        for name in sorted(os.listdir(docs)):
            if not name.endswith(".md") or (args.guides and name not in args.guides):
                continue
            blocks = extract_blocks(os.path.join(docs, name))
            playbooks = [block for block in blocks if block.file_path is None]
            for number, block in enumerate(playbooks, start=1):
                check_playbook(block, number)
            if playbooks:
                guides.append((os.path.join(docs, name), blocks))
    except ExampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not guides:
        print(f"error: no runnable playbook found in {docs}/*.md", file=sys.stderr)
        return 2
    work_root = os.path.abspath(args.work)
    os.makedirs(work_root, mode=0o700, exist_ok=True)
    results = []
    for path, blocks in guides:
        try:
            results.append(run_guide(path, blocks, work_root, settings, test_app_prefix(args.config)))
        except ExampleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print("\n== summary")
    bad = 0
    for result in results:
        status = "ok" if not (result.failed or result.problems) else "FAILED"
        bad += status != "ok"
        print(f"{status:7} {result.guide}: {len(result.passed)} passed, {len(result.failed)} failed, "
              f"{len(result.skipped)} skipped")
        for label in result.failed:
            print(f"          failed:  {label}")
        for label in result.skipped:
            print(f"          skipped: {label} (an earlier example of the guide failed)")
        for problem in result.problems:
            print(f"          {problem}")
    total = sum(len(result.passed) for result in results)
    print(f"{total} runnable playbooks passed in {len(results)} guides; {bad} guides failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
