"""musicfs(1), written from the command's own argparse parser::

    python -m musicfs.cli.manpage > musicfs.1

The packages run this at build time (``packaging/venv-install.sh``), so the
page lists exactly the commands and options of the ``musicfs`` they ship,
and a new option needs no second place to be documented. Every command and
sub-command gets a section with its options (`render`); the parts argparse
does not hold (mount.musicfs and /etc/fstab, exit status, environment, files)
come from the modules that define them. The date is ``SOURCE_DATE_EPOCH``'s
when set, so a package build is reproducible.

Text is escaped for roff (`escape`): backslashes, a leading dot or quote, and
the hyphens of option names (``\\-``, so they copy as ASCII hyphen-minus).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from collections.abc import Iterator

from musicfs.cli.mounthelper import (
    FLAGS,
    IGNORED,
    MOUNT_FAILED,
    MOUNT_OK,
    MOUNT_USAGE,
    VALUES,
)
from musicfs.core.exitcodes import EXIT_CODES

SEE_ALSO = (
    "mount.musicfs(8)",
    "mount(8)",
    "fstab(5)",
    "systemd.mount(5)",
    "fusermount3(1)",
    "fuse(8)",
)
HELPER_SEE_ALSO = ("musicfs(1)", "mount(8)", "fstab(5)", "systemd.mount(5)", "fuse(8)")


def escape(text: str) -> str:
    """*text* as roff source: one filled paragraph, nothing read as a request."""
    text = " ".join(text.split()).replace("\\", "\\e")
    text = text.replace("-", "\\-")
    return re.sub(r"^(?=[.'])", "\\&", text)


def _bold(text: str) -> str:
    return f"\\fB{escape(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{escape(text)}\\fR"


def _metavar(action: argparse.Action) -> str:
    """The argument's placeholder as argparse's help shows it."""
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _with_nargs(action: argparse.Action) -> str:
    """The placeholder(s) *action* takes, in italics, with argparse's brackets."""
    word = _italic(_metavar(action))
    nargs = action.nargs
    if nargs == 0:  # store_true, help, version
        return ""
    if nargs == "?":
        return f"[{word}]"
    if nargs == "*":
        return f"[{word} ...]"
    if nargs == "+":
        return f"{word} [{word} ...]"
    if isinstance(nargs, int):
        return " ".join([word] * nargs)
    return word


def _help(action: argparse.Action, prog: str) -> str:
    """The action's help with argparse's %(...)s expanded."""
    text = action.help or ""
    if "%" in text:
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = prog
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    return text


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each sub-command, in the order --help lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
    ]


def _synopsis(parser: argparse.ArgumentParser, words: list[str]) -> str:
    """``musicfs cache pin [options] PATH ...`` for *parser*, named by *words*."""
    parts = [_bold(" ".join(words))]
    actions = _shown(parser)
    if any(a.option_strings and not isinstance(a, argparse._HelpAction) for a in actions):
        parts.append("[\\fIoptions\\fR]")
    parts += [_with_nargs(a) for a in actions if not a.option_strings]
    if any(True for _ in _subcommands(parser)):
        parts.append(_italic("ACTION") + " ...")
    return " ".join(parts)


def _options(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    lines: list[str] = []
    for action in _shown(parser):
        if isinstance(action, argparse._HelpAction):
            continue  # every command has -h; said once, under OPTIONS
        if action.option_strings:
            names = ", ".join(_bold(o) for o in action.option_strings)
            head = f"{names} {_with_nargs(action)}".rstrip()
        else:  # a positional's heading: its name, without the brackets of "optional"
            head = _italic(_metavar(action))
        lines += [".TP", head, escape(_help(action, prog)) or "\\&"]
    return lines


def _command(parser: argparse.ArgumentParser, words: list[str], summary: str) -> list[str]:
    lines = [".SS " + _synopsis(parser, words)]
    lines += [escape(summary)] if summary else []
    if parser.description:
        lines += [".PP", escape(parser.description)]
    lines += _options(parser, " ".join(words))
    for name, help_text, sub in _subcommands(parser):
        lines += _command(sub, [*words, name], help_text)
    return lines


def _paragraphs(*texts: str) -> list[str]:
    lines: list[str] = []
    for text in texts:
        lines += [".PP", escape(text)]
    return lines


def _example(*lines: str) -> list[str]:
    """Lines shown as they are (no filling), indented."""
    return [".PP", ".RS 4", ".nf", *(escape(line) for line in lines), ".fi", ".RE"]


def _mount_helper() -> list[str]:
    flags = ", ".join(FLAGS)
    values = ", ".join(f"{name}=" for name in VALUES)
    return [
        ".SH MOUNTING WITH MOUNT(8) AND /ETC/FSTAB",
        *_paragraphs(
            "The packages install mount.musicfs (and mount.fuse.musicfs), the helper "
            "mount(8) runs for the file system types fuse.musicfs and musicfs: it runs "
            "musicfs mount, which returns once the mount answers.",
        ),
        *_example("mount -t fuse.musicfs SOURCE MOUNTPOINT [-o OPTIONS]"),
        *_paragraphs(
            "SOURCE is an origin as --origin takes it (a folder or a URL), or none when "
            "the config file lists the origins.",
            f"OPTIONS: {flags} (the flags of the same names); {values} (the flags with "
            "a value; origin= may repeat, for more origins). ro and rw are accepted: the "
            "mount is read-only either way. The options of mount(8) and systemd (_netdev, "
            "nofail, noauto, user, x-systemd.*, x-*) and the generic mount options "
            "(noatime, nosuid, nodev...) are accepted and ignored. Any other option is an "
            "error naming it (with mount -s, a warning). Exit status as mount(8)'s: 0 "
            "mounted, 1 bad usage or refused, 32 the mount failed.",
            "An /etc/fstab line for a library on a network share, mounted when first "
            "used, once the network is up:",
        ),
        *_example(*FSTAB_EXAMPLES),
        *_paragraphs("mount.musicfs(8) says more."),
    ]


FSTAB_EXAMPLES = (
    "/srv/nas/music  /mnt/music  fuse.musicfs  allow_other,_netdev,nofail,x-systemd.automount  0 0",
    "none  /mnt/music  fuse.musicfs  config=/etc/musicfs/music.toml,_netdev  0 0",
)


def _see_also(pages: tuple[str, ...]) -> list[str]:
    refs = [_bold(page.partition("(")[0]) + "(" + page.partition("(")[2] for page in pages]
    return [".SH SEE ALSO", ", ".join(refs)]


def _action_for(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    for action in parser._actions:
        if flag in action.option_strings:
            return action
    raise LookupError(f"musicfs mount has no {flag}")


def render_helper(
    helper: argparse.ArgumentParser, mount: argparse.ArgumentParser, version: str
) -> str:
    """mount.musicfs(8): the helper's call (*helper*, its parser) and its mount
    options, each described by the ``musicfs mount`` flag (*mount*) it becomes."""
    lines = [
        ".\\\" mount.musicfs(8), generated by python -m musicfs.cli.manpage mount.musicfs",
        f'.TH MOUNT.MUSICFS 8 "{_date()}" "{escape(version)}" "System Administration"',
        ".nh",
        ".SH NAME",
        "mount.musicfs, mount.fuse.musicfs \\- mount a MusicFS library with mount(8) and "
        "/etc/fstab",
        ".SH SYNOPSIS",
        _bold("mount -t fuse.musicfs") + " " + _italic("SOURCE MOUNTPOINT")
        + " [" + _bold("-o") + " " + _italic("OPTIONS") + "]",
        ".br",
        _bold("mount.musicfs") + " " + _italic("SOURCE MOUNTPOINT")
        + " [" + _bold("-sfnv") + "] [" + _bold("-o") + " " + _italic("OPTIONS") + "]",
        ".SH DESCRIPTION",
        escape(
            "mount(8) runs mount.fuse.musicfs for file systems of type fuse.musicfs (and "
            "mount.musicfs for type musicfs), from the command line and for /etc/fstab "
            "lines. It runs musicfs mount MOUNTPOINT with the options as its flags, and "
            "returns once the mount answers; the daemon goes on serving it until "
            "umount(8) or musicfs unmount."
        ),
        *_paragraphs(
            "SOURCE is an origin as musicfs mount --origin takes it: a folder, or a URL "
            "such as sftp://user@host/music or s3://bucket/prefix. none (or musicfs) "
            "means no origin here: the config file (config=) lists them.",
        ),
        ".SH OPTIONS",
        ".TP",
        f"{_bold('-h')}, {_bold('--help')}",
        "show the help and exit",
        *_options(helper, "mount.musicfs"),
        ".SH MOUNT OPTIONS",
        escape("Each becomes the flag of musicfs mount named after it:"),
    ]  # fmt: skip
    for name, flag in FLAGS.items():
        lines += [".TP", _bold(name), escape(_help(_action_for(mount, flag), "musicfs mount"))]
    for name, flag in VALUES.items():
        action = _action_for(mount, flag)
        more = " (may repeat; more origins besides SOURCE)" if name == "origin" else ""
        lines += [
            ".TP",
            f"{_bold(name + '=')}{_italic(_metavar(action))}",
            escape(f"{flag}{': ' if action.help else ''}{_help(action, 'musicfs mount')}{more}"),
        ]
    lines += _paragraphs(
        "ro and rw are accepted: the mount is read-only either way (mount(8) passes rw "
        "unless ro is given). Accepted and ignored, as they are for mount(8), systemd or "
        "the kernel's generic mount flags: x-* and X-* (x-systemd.automount, "
        "x-systemd.idle-timeout=...), comment=, " + ", ".join(sorted(IGNORED)) + ".",
        "Any other option is an error that names it; with mount -s (sloppy) it is "
        "dropped with a warning.",
    )
    lines += [".SH FSTAB", escape(
        "A library on a network share, mounted when first used once the network is up "
        "(_netdev orders it after the network, x-systemd.automount mounts it on first "
        "access, nofail keeps the boot going if it fails); and one whose origins are in "
        "a config file:"
    ), *_example(*FSTAB_EXAMPLES)]  # fmt: skip
    lines += _paragraphs(
        "A mount made as root with allow_other is what a media server running as "
        "another user needs. Without config= and cache_dir= the mount uses root's "
        "default config file and cache folder (see musicfs(1), FILES).",
    )
    lines += [".SH EXIT STATUS"]
    for code, meaning in (
        (MOUNT_OK, "mounted (or, with -f, nothing to do)"),
        (MOUNT_USAGE, "bad usage: an unknown or malformed option, or musicfs mount refused "
         "the mount (a missing or non-empty mountpoint, a cache dir in use...)"),
        (MOUNT_FAILED, "the mount failed (the message says why)"),
    ):  # fmt: skip
        lines += [".TP", _bold(str(code)), escape(meaning)]
    lines += _see_also(HELPER_SEE_ALSO)
    return "\n".join(lines) + "\n"


def _exit_status() -> list[str]:
    lines = [".SH EXIT STATUS"]
    for code, meaning in EXIT_CODES.items():
        lines += [".TP", _bold(str(int(code))), escape(meaning)]
    return lines


def _environment() -> list[str]:
    entries = {
        "MUSICFS_CONFIG": "the config file, when --config is not given",
        "MUSICFS_ORIGINS": "origins, as --origin takes them, separated by colons",
        "MUSICFS_SECTION_KEY": "any key of the config file, e.g. MUSICFS_MOUNT_ALLOW_OTHER "
        "for [mount] allow_other; flags win over these, these over the file",
        "MUSICFS_SECRET_ID_KEY": "a secret of origin ID (its password, key...)",
        "XDG_CONFIG_HOME, XDG_CACHE_HOME, XDG_RUNTIME_DIR": "where the default config "
        "file, the cache folders and the control sockets are",
    }
    lines = [".SH ENVIRONMENT"]
    for name, meaning in entries.items():
        lines += [".TP", _bold(name), escape(meaning)]
    return lines


def _files() -> list[str]:
    entries = {
        "$XDG_CONFIG_HOME/musicfs/config.toml": "the default config file "
        "(~/.config/musicfs/config.toml)",
        "$XDG_CACHE_HOME/musicfs/mounts/": "each mount's catalog, cache and log, in a "
        "folder named after its mountpoint (~/.cache/musicfs/mounts/)",
        "/etc/musicfs/": "the config files of the system unit musicfs@.service",
        "/usr/share/musicfs/config.example.toml": "every config key, commented",
    }
    lines = [".SH FILES"]
    for name, meaning in entries.items():
        lines += [".TP", _italic(name), escape(meaning)]
    return lines


def _summary(parser: argparse.ArgumentParser) -> str:
    """The description as NAME wants it: lower case, no full stop."""
    text = (parser.description or "").strip().rstrip(".")
    return text[:1].lower() + text[1:]


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        if epoch and epoch.isdigit()
        else datetime.datetime.now(datetime.UTC)
    )
    return when.strftime("%Y-%m-%d")


def render(parser: argparse.ArgumentParser, version: str) -> str:
    """The man page of *parser* (the ``musicfs`` one) as roff source."""
    name = parser.prog
    lines = [
        f".\\\" {name}(1), generated by python -m musicfs.cli.manpage from its parser",
        f'.TH {name.upper()} 1 "{_date()}" "{escape(version)}" "User Commands"',
        ".nh",  # no hyphenation: URLs and option names stay whole
        ".SH NAME",
        f"{escape(name)} \\- {escape(_summary(parser))}",
        ".SH SYNOPSIS",
        _bold(name) + " " + _italic("COMMAND") + " [\\fIoptions\\fR] [\\fIarguments\\fR]",
        ".br",
        _bold(f"{name} --version"),
        ".br",
        _bold("mount -t fuse.musicfs") + " " + _italic("SOURCE MOUNTPOINT")
        + " [" + _bold("-o") + " " + _italic("OPTIONS") + "]",
        ".SH DESCRIPTION",
        escape(parser.description or ""),
        *_paragraphs(
            "musicfs mount serves a library at a mountpoint from a daemon; the other "
            "commands talk to that daemon over its control socket, and name the mount "
            "with --mount MOUNTPOINT (-m), which can be left out while a single mount "
            "runs. Every command prints its own help with -h.",
        ),
        ".SH OPTIONS",
        ".TP",
        f"{_bold('-h')}, {_bold('--help')}",
        "show the help of musicfs, or of the command it follows, and exit",
        *_options(parser, name),
        ".SH COMMANDS",
    ]  # fmt: skip
    for command, help_text, sub in _subcommands(parser):
        lines += _command(sub, [name, command], help_text)
    lines += _mount_helper() + _exit_status() + _environment() + _files()
    lines += _see_also(SEE_ALSO)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m musicfs.cli.manpage [musicfs|mount.musicfs]``: the page on stdout."""
    from musicfs.cli import mounthelper
    from musicfs.cli.main import _version, build_parser

    which = (sys.argv[1:] if argv is None else argv) or ["musicfs"]
    parser = build_parser()
    if which == ["musicfs"]:
        sys.stdout.write(render(parser, _version()))
    elif which == ["mount.musicfs"]:
        mount = {name: sub for name, _, sub in _subcommands(parser)}["mount"]
        page = render_helper(mounthelper.build_parser(), mount, _version())
        sys.stdout.write(page)
    else:
        print("usage: python -m musicfs.cli.manpage [musicfs|mount.musicfs]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
