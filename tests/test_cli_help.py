"""The command line explains itself: `--help` of every command, `--version`, and the README's settings table,
all from the same definitions (router/settings.py)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import metadata

import pytest

from router.cli import build_parser
from router.settings import GROUPS, SPECS, TABLE_BEGIN, TABLE_END, markdown, with_table
from tests.helpers import PROJECT_ROOT, run_to_exit

CLI = [sys.executable, "-m", "router.cli"]
WIDE = {"COLUMNS": "400"}  # argparse wraps help at the terminal's width: one line per flag here


@pytest.fixture(autouse=True)
def no_router_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ROUTER_")]:
        monkeypatch.delenv(name)


def serve_help_sections() -> dict[str, list[str]]:
    """`serve --help` of a real process: the entries (a flag and its help) of each titled section."""
    code, output = run_to_exit([*CLI, "serve", "--help"], env=WIDE)
    assert code == 0, output
    sections: dict[str, list[str]] = {}
    title = ""
    for line in output.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            title = line[:-1]
            sections[title] = []
        elif title and line.strip().startswith("-"):
            sections[title].append(" ".join(line.split()))
        elif title and line.strip() and sections[title]:  # the help, below a long flag
            sections[title][-1] += " " + " ".join(line.split())
    return sections


def test_serve_help_lists_every_setting_in_its_group_with_what_it_does_its_default_and_variable() -> None:
    sections = serve_help_sections()
    assert [title for title in sections if title in GROUPS] == [g for g in GROUPS if any(s.group == g for s in SPECS)]
    for spec in SPECS:
        lines = [line for line in sections[spec.group] if line.startswith(spec.flag + " ")
                 or line.startswith(spec.flag + ",")]
        assert len(lines) == 1, f"{spec.flag} not in the {spec.group!r} section: {sections[spec.group]}"
        assert lines[0].endswith(spec.describe()), lines[0]
        assert f"(default: {spec.default_text}; {spec.env})" in lines[0]
        assert spec.metavar in lines[0] or spec.kind is bool


def test_serve_help_puts_the_source_flags_with_resources_and_cluster() -> None:
    cluster = " ".join(serve_help_sections()["resources and cluster"])
    for flag in ("--config FILE", "--kubernetes", "--namespace NS", "--kubeconfig FILE"):
        assert flag in cluster


def test_every_setting_says_what_it_does_in_one_line() -> None:
    for spec in SPECS:
        assert spec.help and "\n" not in spec.help and len(spec.describe()) < 200, spec.name
        assert spec.group in GROUPS


def _parsers(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_flag_of_every_command_says_what_it_does_and_its_default() -> None:
    commands = _parsers(build_parser(), "inference-router")
    assert {path for path, _ in commands} >= {
        "inference-router serve", "inference-router demo", "inference-router sample-model",
        "inference-router certs dev", "inference-router certs check", "inference-router certs secret",
        "inference-router token"}
    for path, parser in commands:
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            assert action.help, f"{path} {action.option_strings[0]} has no help"
            said = "required" if action.required else "default"
            assert said in action.help, f"{path} {action.option_strings[0]}: its help does not say its {said}"


def test_top_level_help_lists_every_command() -> None:
    code, output = run_to_exit([*CLI, "--help"], env=WIDE)
    assert code == 0, output
    for command in ("serve", "demo", "sample-model", "certs", "token"):
        assert re.search(rf"^\s+{command}\s+\S", output, re.MULTILINE), f"{command} missing:\n{output}"


def test_version_prints_the_package_version() -> None:
    code, output = run_to_exit([*CLI, "--version"])
    assert code == 0, output
    assert output.strip() == f"inference-router {metadata.version('inference-router')}"


@pytest.mark.parametrize(("args", "message"), [
    (("--drain-delay", "abc"), "argument --drain-delay: expected a number of seconds at least 0, got 'abc'"),
    (("--balancing-policy", "fastest"),
     "argument --balancing-policy: expected one of least_loaded, round_robin, got 'fastest'"),
    (("--no-such-flag",), "unrecognized arguments: --no-such-flag"),
])
def test_a_wrong_value_exits_2_as_an_unknown_flag_does(args: tuple[str, ...], message: str) -> None:
    code, output = run_to_exit([*CLI, "serve", "--allow-insecure-connections", "--config", "x.yaml", *args])
    assert code == 2, output
    assert message in output and "Traceback" not in output


def test_the_readme_settings_table_is_the_one_made_from_the_definitions() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = readme.index(TABLE_BEGIN), readme.index(TABLE_END)
    assert readme[begin + len(TABLE_BEGIN) + 1:end] == markdown(), (
        "README.md's settings table differs from router/settings.py: run `make readme`")
    for spec in SPECS:
        assert f"`{spec.env}`" in readme and f"`{spec.flag}" in readme


def test_the_table_is_rewritten_between_its_markers_only() -> None:
    text = f"# title\n\n{TABLE_BEGIN}\n| old | table |\n{TABLE_END}\n\nafter\n"
    rewritten = with_table(text)
    assert rewritten == f"# title\n\n{TABLE_BEGIN}\n{markdown()}{TABLE_END}\n\nafter\n"
    assert with_table(rewritten) == rewritten
    with pytest.raises(ValueError, match="no settings table markers"):
        with_table("# no table here\n")
