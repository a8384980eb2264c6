"""Credentials: environment, 0600 file and keyring lookup, and secrets kept out of logs."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.fail
import pytest
from keyring.compat import properties

from musicfs.core.secrets.credentials import (
    CredentialError,
    Credentials,
    default_credentials_path,
    env_var_name,
)
from musicfs.core.secrets.redact import (
    SecretFilter,
    clear_secrets,
    install_redaction,
    redact,
    redact_url,
    register_secret,
)

SECRET = "hunter2-Sup3r-secret"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """An in-memory keyring. Not viable, so keyring never picks it by itself."""

    @properties.classproperty
    def priority(cls) -> float:
        raise RuntimeError("test backend, only used through keyring.set_keyring")

    def __init__(self, secrets: dict[tuple[str, str], str] | None = None) -> None:
        super().__init__()
        self.secrets = dict(secrets or {})
        self.asked: list[tuple[str, str]] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.asked.append((service, username))
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[service, username] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.secrets[service, username]


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("org.freedesktop.DBus.Error.ServiceUnknown")


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def write_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


# --- environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin_id", "key", "name"),
    [
        ("nas", "password", "MUSICFS_SECRET_NAS_PASSWORD"),
        ("s3-music", "secret_key", "MUSICFS_SECRET_S3_MUSIC_SECRET_KEY"),
        ("home.nas", "pass-word", "MUSICFS_SECRET_HOME_NAS_PASS_WORD"),
        ("Björk's NAS", "password", "MUSICFS_SECRET_BJ_RK_S_NAS_PASSWORD"),
        ("MiXeD_Case9", "Token", "MUSICFS_SECRET_MIXED_CASE9_TOKEN"),
    ],
)
def test_env_lookup_with_odd_origin_ids(origin_id: str, key: str, name: str) -> None:
    assert env_var_name(origin_id, key) == name
    creds = Credentials.load(Path("/nonexistent/credentials.toml"), {name: SECRET}, False)
    assert creds.get(origin_id, key) == SECRET
    assert creds.get(origin_id, "other") is None
    assert creds.get("other", key) is None


def test_empty_env_variable_counts_as_unset(tmp_path: Path) -> None:
    path = write_file(tmp_path / "c.toml", f'[nas]\npassword = "{SECRET}"\n')
    creds = Credentials.load(path, {"MUSICFS_SECRET_NAS_PASSWORD": ""}, use_keyring=False)
    assert creds.get("nas", "password") == SECRET


def test_only_secret_variables_are_kept() -> None:
    creds = Credentials.load(
        Path("/nonexistent/c.toml"), {"HOME": "/x", "MUSICFS_LOG_LEVEL": "debug"}, False
    )
    assert creds.get("log", "level") is None


# --- file ----------------------------------------------------------------------------------


def test_file_lookup(tmp_path: Path) -> None:
    path = write_file(
        tmp_path / "credentials.toml",
        f'[nas]\npassword = "{SECRET}"\nuser = "music"\n\n'
        '["s3-music"]\nsecret_key = "AKIA-secret-key"\n',
    )
    creds = Credentials.load(path, {}, use_keyring=False)
    assert creds.get("nas", "password") == SECRET
    assert creds.get("nas", "user") == "music"
    assert creds.get("s3-music", "secret_key") == "AKIA-secret-key"
    assert creds.get("nas", "secret_key") is None
    assert creds.get("sftp", "password") is None
    assert SECRET not in repr(creds)


def test_default_path_is_under_xdg_config_home(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert default_credentials_path(env) == tmp_path / "xdg" / "musicfs" / "credentials.toml"
    write_file(tmp_path / "xdg" / "musicfs" / "credentials.toml", f'[nas]\npassword = "{SECRET}"')
    assert Credentials.load(environ=env, use_keyring=False).get("nas", "password") == SECRET


def test_default_path_falls_back_to_dot_config(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert default_credentials_path(env) == tmp_path / ".config" / "musicfs" / "credentials.toml"
    write_file(tmp_path / ".config" / "musicfs" / "credentials.toml", '[nas]\npassword = "pw-1"')
    assert Credentials.load(environ=env, use_keyring=False).get("nas", "password") == "pw-1"


def test_missing_file_is_fine(tmp_path: Path) -> None:
    creds = Credentials.load(tmp_path / "absent.toml", {}, use_keyring=False)
    assert creds.get("nas", "password") is None


@pytest.mark.parametrize(("mode", "shown"), [(0o644, "0644"), (0o640, "0640"), (0o602, "0602")])
def test_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int, shown: str) -> None:
    path = write_file(tmp_path / "credentials.toml", f'[nas]\npassword = "{SECRET}"\n', mode)
    with pytest.raises(CredentialError) as info:
        Credentials.load(path, {}, use_keyring=False)
    message = str(info.value)
    assert str(path) in message
    assert shown in message
    assert f"chmod 600 {path}" in message
    assert SECRET not in message


def test_file_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_file(tmp_path / "credentials.toml", f'[nas]\npassword = "{SECRET}"\n')
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(CredentialError, match="belongs to uid") as info:
        Credentials.load(path, {}, use_keyring=False)
    assert str(path) in str(info.value)
    assert "chown" in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="not a regular file"):
        Credentials.load(tmp_path, {}, use_keyring=False)


@pytest.mark.parametrize(
    "text",
    [
        f"[nas]\npassword = {SECRET}\n",  # unquoted
        f'[nas]\npassword = "{SECRET}\n',  # unterminated
        f'[nas]\npassword = "{SECRET}" extra\n',
        f'[nas]\npassword = "{SECRET}\x01"\n',  # control character
        f"[nas]\npassword = '''{SECRET}\n",
        f'[nas]\n{SECRET} "x"\n',  # a secret where a key should be
        f'[nas]\npassword = "{SECRET}"\npassword = "{SECRET}"\n',
    ],
)
def test_malformed_file_error_names_position_not_content(tmp_path: Path, text: str) -> None:
    path = write_file(tmp_path / "credentials.toml", text)
    with pytest.raises(CredentialError) as info:
        Credentials.load(path, {}, use_keyring=False)
    message = str(info.value)
    assert str(path) in message
    assert "line " in message or "end of document" in message
    for fragment in (SECRET, "hunter2", "secret"):
        assert fragment not in message.replace(str(path), "")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "credentials.toml"
    path.write_bytes(b'[nas]\npassword = "\xff' + SECRET.encode() + b'"\n')
    path.chmod(0o600)
    with pytest.raises(CredentialError, match="UTF-8") as info:
        Credentials.load(path, {}, use_keyring=False)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('password = "hunter2-top-level"\n', "must be a table"),
        ("[nas]\npassword = 1234567\n", "must be a string"),
        ('[nas]\npassword = ["hunter2-in-array"]\n', "must be a string"),
    ],
)
def test_file_with_wrong_shape_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = write_file(tmp_path / "credentials.toml", text)
    with pytest.raises(CredentialError, match=expected) as info:
        Credentials.load(path, {}, use_keyring=False)
    assert "hunter2" not in str(info.value)
    assert "1234567" not in str(info.value)


# --- keyring -------------------------------------------------------------------------------


def test_keyring_lookup(memory_keyring: MemoryKeyring) -> None:
    keyring.set_password("musicfs", "s3-music/secret_key", SECRET)
    creds = Credentials.load(Path("/nonexistent/c.toml"), {})
    assert creds.get("s3-music", "secret_key") == SECRET
    assert creds.get("s3-music", "access_key") is None
    assert memory_keyring.asked == [
        ("musicfs", "s3-music/secret_key"),
        ("musicfs", "s3-music/access_key"),
    ]
    assert redact(f"key={SECRET}") == "key=***"


def test_keyring_not_asked_when_disabled(memory_keyring: MemoryKeyring) -> None:
    memory_keyring.set_password("musicfs", "nas/password", SECRET)
    creds = Credentials.load(Path("/nonexistent/c.toml"), {}, use_keyring=False)
    assert creds.get("nas", "password") is None
    assert memory_keyring.asked == []


def test_failing_keyring_is_not_found(caplog: pytest.LogCaptureFixture) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(BrokenKeyring())
    try:
        creds = Credentials.load(Path("/nonexistent/c.toml"), {})
        with caplog.at_level(logging.DEBUG, logger="musicfs.core.secrets.credentials"):
            assert creds.get("nas", "password") is None
    finally:
        keyring.set_keyring(previous)
    assert "ServiceUnknown" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_missing_keyring_backend_is_not_found(caplog: pytest.LogCaptureFixture) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        creds = Credentials.load(Path("/nonexistent/c.toml"), {})
        with caplog.at_level(logging.DEBUG, logger="musicfs.core.secrets.credentials"):
            assert creds.get("nas", "password") is None
            assert creds.get("nas", "user") is None
    finally:
        keyring.set_keyring(previous)
    assert "no keyring backend" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_keyring_library_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # makes `import keyring` fail
    creds = Credentials.load(Path("/nonexistent/c.toml"), {})
    assert creds.get("nas", "password") is None


# --- precedence ----------------------------------------------------------------------------


def test_precedence_env_then_file_then_keyring(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    path = write_file(
        tmp_path / "credentials.toml", '[nas]\npassword = "from-file"\nuser = "file-user"\n'
    )
    for key in ("password", "user", "domain"):
        memory_keyring.set_password("musicfs", f"nas/{key}", f"keyring-{key}")
    env = {"MUSICFS_SECRET_NAS_PASSWORD": "from-env"}
    creds = Credentials.load(path, env)
    assert creds.get("nas", "password") == "from-env"
    assert creds.get("nas", "user") == "file-user"
    assert creds.get("nas", "domain") == "keyring-domain"
    assert memory_keyring.asked == [("musicfs", "nas/domain")]


def test_require_says_where_to_put_a_missing_secret(tmp_path: Path) -> None:
    creds = Credentials.load(tmp_path / "c.toml", {}, use_keyring=False)
    with pytest.raises(CredentialError) as info:
        creds.require("s3-music", "secret_key")
    message = str(info.value)
    assert "MUSICFS_SECRET_S3_MUSIC_SECRET_KEY" in message
    assert str(tmp_path / "c.toml") in message
    creds = Credentials.load(tmp_path / "c.toml", {"MUSICFS_SECRET_NAS_PASSWORD": SECRET}, False)
    assert creds.require("nas", "password") == SECRET


# --- redaction -----------------------------------------------------------------------------


def test_register_and_redact() -> None:
    register_secret("abc")  # too short: would mangle ordinary text
    register_secret("")
    register_secret("pass")
    register_secret("pass1234")
    assert redact("abc pass pass1234 x") == "abc *** *** x"
    assert redact("nothing here") == "nothing here"


def test_encoded_forms_are_redacted_too() -> None:
    secret = "p@ss w/rd\\x"
    register_secret(secret)
    from urllib.parse import quote

    assert redact(quote(secret, safe="")) == "***"
    assert redact(repr({"password": secret})) == "{'password': '***'}"


def test_get_registers_what_it_returns(tmp_path: Path) -> None:
    path = write_file(tmp_path / "c.toml", '[nas]\npassword = "file-secret-1"\n')
    creds = Credentials.load(path, {"MUSICFS_SECRET_X_Y": "env-secret-2"}, use_keyring=False)
    assert creds.get("nas", "password") == "file-secret-1"
    assert creds.get("x", "y") == "env-secret-2"
    assert redact("file-secret-1 env-secret-2") == "*** ***"


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """A real StreamHandler on the root logger, redaction installed; all undone after."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    old_level, old_factory = root.level, logging.getLogRecordFactory()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    install_redaction()
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    logging.setLogRecordFactory(old_factory)
    for filterer in (root, *root.handlers):
        for f in list(filterer.filters):
            if isinstance(f, SecretFilter):
                filterer.removeFilter(f)


def test_secret_never_appears_in_log_lines(root_stream: io.StringIO) -> None:
    register_secret(SECRET)
    log = logging.getLogger("musicfs.test.credentials")
    log.debug("debug with arg %s", SECRET)
    log.info("info with arg %r and %d", SECRET, 7)
    log.warning("mapping args %(pw)s", {"pw": SECRET})
    log.error(f"error with f-string {SECRET}")
    log.info(SECRET)  # the message itself
    log.info(RuntimeError(SECRET))  # a non-string message
    log.info("bad format %d", SECRET)  # formatting fails: logging must not print the args
    out = root_stream.getvalue()
    assert SECRET not in out
    assert out.count("***") == 7
    assert "DEBUG musicfs.test.credentials: debug with arg ***" in out
    assert "info with arg '***' and 7" in out
    assert "error with f-string ***" in out
    assert "bad format %d [log arguments could not be formatted (TypeError): ('***',)]" in out


def test_secret_never_appears_in_tracebacks(root_stream: io.StringIO) -> None:
    register_secret(SECRET)
    log = logging.getLogger("musicfs.test.credentials")

    def connect(password: str) -> None:
        raise ConnectionError(f"login refused for password {password}")

    try:
        try:
            connect(SECRET)
        except ConnectionError as exc:
            raise RuntimeError(f"origin nas unavailable ({SECRET})") from exc
    except RuntimeError:
        log.exception("mount failed with %s", SECRET)
        log.debug("again at debug", exc_info=True)
    log.info("with stack", stack_info=True)
    out = root_stream.getvalue()
    assert SECRET not in out
    assert "Traceback (most recent call last)" in out
    assert "ConnectionError: login refused for password ***" in out
    assert "RuntimeError: origin nas unavailable (***)" in out
    assert "mount failed with ***" in out


def test_handlers_added_later_and_non_propagating_loggers(root_stream: io.StringIO) -> None:
    register_secret(SECRET)
    later = io.StringIO()
    handler = logging.StreamHandler(later)
    logging.getLogger().addHandler(handler)  # e.g. a logging setup after install_redaction
    private = logging.getLogger("musicfs.test.private")
    private.propagate = False
    private_out = io.StringIO()
    private.addHandler(logging.StreamHandler(private_out))
    try:
        logging.getLogger("musicfs.test.credentials").info("later %s", SECRET)
        private.warning("private %s", SECRET)
    finally:
        logging.getLogger().removeHandler(handler)
        private.handlers.clear()
        private.propagate = True
    assert later.getvalue() == "later ***\n"
    assert private_out.getvalue() == "private ***\n"
    assert SECRET not in root_stream.getvalue()


def test_filter_alone_on_a_handler() -> None:
    register_secret(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter())
    log = logging.getLogger("musicfs.test.filter-only")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        log.debug("pw=%s", SECRET)
        try:
            raise ValueError(SECRET)
        except ValueError:
            log.exception("failed")
    finally:
        log.handlers.clear()
        log.propagate = True
    out = stream.getvalue()
    assert SECRET not in out
    assert "pw=***" in out
    assert "ValueError: ***" in out


def test_records_without_secrets_are_left_alone(root_stream: io.StringIO) -> None:
    register_secret(SECRET)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "n=%d", (5,), None)
    assert SecretFilter().filter(record)
    assert record.msg == "n=%d"
    assert record.args == (5,)


# --- redact_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sftp://user:pw@host/x", "sftp://user@host/x"),
        ("sftp://user@host/x", "sftp://user@host/x"),
        ("smb://DOMAIN;user:p%40ss@nas:445/share?x=1#f", "smb://DOMAIN;user@nas:445/share?x=1#f"),
        ("sftp://user:p@ss@host:22", "sftp://user@host:22"),
        ("smb://:guestpw@nas/share", "smb://nas/share"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("https://host/path@with-at", "https://host/path@with-at"),
        ("/srv/music", "/srv/music"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_masks_registered_secrets_elsewhere() -> None:
    register_secret(SECRET)
    assert redact_url(f"s3://bucket/prefix?token={SECRET}") == "s3://bucket/prefix?token=***"
