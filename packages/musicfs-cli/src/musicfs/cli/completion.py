"""``musicfs completion bash|zsh|fish``: shell completion, made from the parser.

The script is generated from the same argparse tree the command uses, so it
never lags behind a new command or option. Install it with e.g.
``musicfs completion bash > /etc/bash_completion.d/musicfs``.
"""

from __future__ import annotations

import argparse
from typing import Any

SHELLS = ("bash", "zsh", "fish")


def add_parser(sub: Any) -> None:
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=SHELLS)


def cmd_completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    tree = _tree(parser)
    print(_fish(tree) if args.shell == "fish" else _bash(tree, zsh=args.shell == "zsh"))
    return 0


Tree = dict[str, tuple[list[str], dict[str, list[str]]]]  # command -> (options, actions)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _tree(parser: argparse.ArgumentParser) -> Tree:
    tree: Tree = {}
    for name, command in _subparsers(parser).items():
        actions = {a: _options(p) for a, p in _subparsers(command).items()}
        tree[name] = (_options(command), actions)
    return tree


def _bash(tree: Tree, zsh: bool) -> str:
    cases = []
    for name, (options, actions) in sorted(tree.items()):
        if actions:
            names = " ".join(sorted(actions))
            inner = "\n".join(
                f'                {a}) COMPREPLY=($(compgen -W "{" ".join(o)}" -f -- "$cur"));;'
                for a, o in sorted(actions.items())
            )
            cases.append(
                f"        {name})\n"
                f'            if [ "$COMP_CWORD" -eq 2 ]; then\n'
                f'                COMPREPLY=($(compgen -W "{names}" -- "$cur"))\n'
                f'            else case "${{COMP_WORDS[2]}}" in\n{inner}\n'
                f"            esac; fi;;"
            )
        else:
            cases.append(
                f'        {name}) COMPREPLY=($(compgen -W "{" ".join(options)}" -f -- "$cur"));;'
            )
    prelude = "autoload -U +X bashcompinit && bashcompinit\n" if zsh else ""
    return (
        f"{prelude}_musicfs() {{\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}"\n'
        '    if [ "$COMP_CWORD" -eq 1 ]; then\n'
        f'        COMPREPLY=($(compgen -W "{" ".join(sorted(tree))} --help --version" -- "$cur"))\n'
        "        return\n"
        "    fi\n"
        '    case "${COMP_WORDS[1]}" in\n' + "\n".join(cases) + "\n    esac\n}\n"
        "complete -o default -F _musicfs musicfs"
    )


def _fish(tree: Tree) -> str:
    lines = [f"complete -c musicfs -n __fish_use_subcommand -a '{' '.join(sorted(tree))}'"]
    for name, (options, actions) in sorted(tree.items()):
        if actions:
            lines.append(f"complete -c musicfs -n '__fish_seen_subcommand_from {name}' "
                         f"-a '{' '.join(sorted(actions))}'")  # fmt: skip
        for option in sorted({o for opts in [options, *actions.values()] for o in opts}):
            lines.append(f"complete -c musicfs -n '__fish_seen_subcommand_from {name}' "
                         f"-l {option[2:]}")  # fmt: skip
    return "\n".join(lines)
