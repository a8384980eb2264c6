"""Secrets of remote origins: finding them, and keeping them out of logs (SPEC NFR-13).

Remote origins (S3, SFTP, SMB) take their secrets as constructor arguments;
`Credentials` finds them. ``Credentials.get(origin_id, key)`` looks in order at

1. the environment variable ``MUSICFS_SECRET_<ORIGIN>_<KEY>`` (origin id and key
   upper-cased, every character other than ASCII letters and digits turned into
   ``_``; an empty variable counts as unset),
2. the TOML credentials file, by default ``$XDG_CONFIG_HOME/musicfs/credentials.toml``
   (``~/.config/musicfs/credentials.toml``), one table per origin id::

       [nas]
       password = "..."

       [s3-music]
       secret_key = "..."

   The file must belong to the current user and must not be readable or
   writable by group or others (``chmod 600``); otherwise it is refused with a
   `CredentialError`. A missing file is fine: it simply holds no secrets.
3. the system keyring (service ``musicfs``, user name ``<origin_id>/<key>``),
   through the optional ``keyring`` library. A missing library, a missing
   backend or a failing backend is logged at debug level and means "not found".

Every secret found is registered with the redaction registry
(`musicfs.core.secrets.redact`), which keeps it out of logs and event details.

Nothing here reads the main configuration, prompts the user or writes a file.
Error messages never contain a secret, nor the content of the credentials file.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from musicfs.core.errors import MusicFSError
from musicfs.core.secrets.redact import register_secret

log = logging.getLogger(__name__)

#: Prefix of the environment variables that hold secrets.
ENV_PREFIX = "MUSICFS_SECRET_"
#: The keyring service name; the keyring user name is ``<origin_id>/<key>``.
KEYRING_SERVICE = "musicfs"

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_TOML_POSITION = re.compile(r"\(at (line \d+, column \d+|end of document)\)\s*$")
# TOML error reasons that quote nothing from the file; any other reason is cut
# before its first quote or parenthesis, which is where tomllib quotes content.
_SAFE_TOML_REASONS = frozenset(
    {
        "Expected '=' after a key in a key/value pair",
        "Expected ']' at the end of a table declaration",
        "Expected ']]' at the end of an array declaration",
        "Unescaped '\\' in a string",
    }
)


class CredentialError(MusicFSError):
    """Secrets cannot be read. The message says what is wrong and how to fix it,
    and never contains a secret."""


def env_var_name(origin_id: str, key: str) -> str:
    """The environment variable holding *key* of *origin_id*:
    ``env_var_name("s3-music", "secret_key") == "MUSICFS_SECRET_S3_MUSIC_SECRET_KEY"``."""
    return (
        ENV_PREFIX + _NOT_ALNUM.sub("_", origin_id).upper() + "_" + _NOT_ALNUM.sub("_", key).upper()
    )


def default_credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/musicfs/credentials.toml``, by default
    ``~/.config/musicfs/credentials.toml``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec says: ignore relative paths
        home = environ.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    return Path(base) / "musicfs" / "credentials.toml"


class Credentials:
    """Secrets of the origins, from the environment, the credentials file and the keyring.

    Build it with `load`; ask it with `get` (or `require`). Its repr names the
    file and the origin ids it holds secrets for, never a secret.
    """

    def __init__(
        self,
        file_secrets: Mapping[str, Mapping[str, str]] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        path: Path | None = None,
        use_keyring: bool = True,
    ) -> None:
        self.path = path
        self.use_keyring = use_keyring
        self._file = {origin: dict(keys) for origin, keys in (file_secrets or {}).items()}
        self._env = {k: v for k, v in (environ or {}).items() if k.startswith(ENV_PREFIX)}
        self._keyring_missing = False
        for value in self._env.values():
            register_secret(value)
        for keys in self._file.values():
            for value in keys.values():
                register_secret(value)

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        use_keyring: bool = True,
    ) -> Credentials:
        """Read the credentials file (*path*, default `default_credentials_path`) and
        take the ``MUSICFS_SECRET_*`` variables of *environ* (default `os.environ`).

        Raises `CredentialError` if the file exists but is not the user's own,
        is open to group or others, is not a regular file, cannot be read or is
        not valid TOML of ``[origin-id]`` tables of strings.
        """
        environ = os.environ if environ is None else environ
        path = default_credentials_path(environ) if path is None else Path(path)
        return cls(_read_file(path), environ, path=path, use_keyring=use_keyring)

    def __repr__(self) -> str:
        return f"Credentials(path={str(self.path)!r}, file_origins={sorted(self._file)!r})"

    def get(self, origin_id: str, key: str) -> str | None:
        """The secret *key* (e.g. ``password``) of *origin_id*, or None if no source has it.

        The returned secret is registered for redaction (`register_secret`).
        """
        name = env_var_name(origin_id, key)
        value = self._env.get(name)
        if value:
            log.debug("origin %s: %s from environment variable %s", origin_id, key, name)
            return _registered(value)
        value = self._file.get(origin_id, {}).get(key)
        if value is not None:
            log.debug("origin %s: %s from %s", origin_id, key, self.path)
            return _registered(value)
        if self.use_keyring:
            value = self._from_keyring(origin_id, key)
            if value is not None:
                log.debug("origin %s: %s from the system keyring", origin_id, key)
                return _registered(value)
        log.debug("origin %s: no %s in any credential source", origin_id, key)
        return None

    def require(self, origin_id: str, key: str) -> str:
        """Like `get`, but raise `CredentialError` saying where to put a missing secret."""
        value = self.get(origin_id, key)
        if value is None:
            where = self.path or default_credentials_path()
            places = [
                f"set the environment variable {env_var_name(origin_id, key)}",
                f'add {key} = "..." under [{origin_id}] in {where} (chmod 600)',
            ]
            if self.use_keyring:
                places.append(f"run: keyring set {KEYRING_SERVICE} {_keyring_user(origin_id, key)}")
            raise CredentialError(
                f"origin {origin_id!r} needs a {key} but none was found; " + ", or ".join(places)
            )
        return value

    def _from_keyring(self, origin_id: str, key: str) -> str | None:
        if self._keyring_missing:
            return None
        user = _keyring_user(origin_id, key)
        try:
            import keyring
            import keyring.errors
        except ImportError as exc:
            log.debug("keyring library not installed (%s); not looking there", exc)
            self._keyring_missing = True
            return None
        try:
            # Typed str | None, but third-party backends have returned bytes.
            value: object = keyring.get_password(KEYRING_SERVICE, user)
        except keyring.errors.NoKeyringError as exc:
            log.debug("no keyring backend available (%s); not looking there", exc)
            self._keyring_missing = True
            return None
        except Exception as exc:  # any backend failure (locked, D-Bus down, ...) = not found
            log.debug("keyring lookup of %s/%s failed: %s: %s", KEYRING_SERVICE, user,
                      type(exc).__name__, exc)  # fmt: skip
            return None
        if value is not None and not isinstance(value, str):
            log.debug("keyring returned a %s for %s, ignored", type(value).__name__, user)
            return None
        return value


def _keyring_user(origin_id: str, key: str) -> str:
    return f"{origin_id}/{key}"


def _registered(value: str) -> str:
    register_secret(value)
    return value


def _read_file(path: Path) -> dict[str, dict[str, str]]:
    """The ``{origin: {key: secret}}`` tables of the credentials file ({} if absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        log.debug("no credentials file at %s", path)
        return {}
    except OSError as exc:
        raise CredentialError(
            f"cannot read credentials file {path}: {exc.strerror}; "
            f"make it a regular file readable by you (chmod 600 {path})"
        ) from None
    try:
        # Checked on the open file, so the file checked is the file read.
        _check_file(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        try:
            raw = fh.read()
        except OSError as exc:
            raise CredentialError(f"cannot read credentials file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialError(
            f"credentials file {path} is not valid UTF-8 (at byte {exc.start}); "
            "save it as UTF-8 text"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CredentialError(
            f"credentials file {path} is not valid TOML: {_toml_error(exc)}; "
            'it must hold one [origin-id] table per origin, e.g. [nas] password = "..."'
        ) from None
    return _tables(path, data)


def _check_file(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"credentials file {path} is not a regular file")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise CredentialError(
            f"credentials file {path} belongs to uid {st.st_uid}, not to you (uid {uid}); "
            f"refusing to trust it. Fix: chown {uid} {path} && chmod 600 {path}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise CredentialError(
            f"credentials file {path} has mode {mode:04o}: group or others may read or "
            f"change it, so it is refused. Fix: chmod 600 {path}"
        )


def _toml_error(exc: tomllib.TOMLDecodeError) -> str:
    """Reason and position of a TOML error, without any text quoted from the file."""
    message = str(exc)
    match = _TOML_POSITION.search(message)
    position = match.group(1) if match else "unknown position"
    reason = message[: match.start()].strip() if match else ""
    if reason not in _SAFE_TOML_REASONS:
        cut = re.split(r"['\"(]", reason, maxsplit=1)[0].strip()
        reason = f"{cut} …".strip() if cut != reason else reason
    return f"{reason or 'syntax error'} at {position}"


def _tables(path: Path, data: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for origin, table in data.items():
        if not isinstance(table, dict):
            raise CredentialError(
                f"credentials file {path}: {origin!r} must be a table of secrets "
                f'([{origin}] followed by key = "..." lines), not a bare value'
            )
        secrets: dict[str, str] = {}
        for key, value in table.items():
            if not isinstance(value, str):
                # The type only: the value may be (part of) a secret.
                raise CredentialError(
                    f"credentials file {path}: [{origin}] {key} must be a string in quotes, "
                    f"not a {_toml_type(value)}"
                )
            secrets[key] = value
        result[origin] = secrets
    return result


def _toml_type(value: Any) -> str:
    return {dict: "table", list: "array", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "date or time"
    )
