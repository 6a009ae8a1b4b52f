"""odc_ndvi_plugin._redact: the naming rule, mappings, URLs, text and log records."""

from __future__ import annotations

import logging

import pytest

from odc_ndvi_plugin import _redact as sec
from odc_ndvi_plugin._redact import (
    MASK,
    RedactingFilter,
    is_secret_name,
    redact_mapping,
    redact_text,
    redact_url,
    redact_value,
    register_secret,
    secret_values_from_environ,
)


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch):
    monkeypatch.setattr(sec, "_REGISTRY", set())


SECRET_NAMES = [
    "password",
    "PASSWORD",
    "db_password",
    "DB-Password",
    "passwd",
    "ssh_passphrase",
    "secret",
    "client_secret",
    "AWS_SECRET_ACCESS_KEY",
    "aws_secret_access_key",
    "AWS_SESSION_TOKEN",
    "aws_session_token",
    "AWS_ACCESS_KEY_ID",
    "accessKeyId",
    "secretAccessKey",
    "token",
    "id_token",
    "refresh-token",
    "DASK_GATEWAY__AUTH__KWARGS__PASSWORD",
    "DASK_GATEWAY_API_TOKEN",
    "JUPYTERHUB_API_TOKEN",
    "api_key",
    "API-KEY",
    "apikey",
    "x_api_key",
    "private_key",
    "gcs.private.key",
    "credentials",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "Authorization",
    "Cookie",
    "sig",
    "MYSQL_PWD",
    "db_pwd",
    "pass",
    "session",
]

PLAIN_NAMES = [
    "monkey",
    "key",
    "keyboard",
    "s3_key",
    "key_prefix",
    "donkey_kong",
    "worker_memory",
    "worker_cores",
    "image",
    "address",
    "username",
    "user",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_S3_ENDPOINT",
    "AWS_HTTPS",
    "passenger",  # not exactly "pass"
    "signal",  # not exactly "sig"
    "PWD",  # the shell's working directory, not a password
    "OLDPWD",
    "pwd",
    "AWS_SHARED_CREDENTIALS_FILE",
    "password_env",
    "token_path",
    "secrets_dir",
    "session_type",
    "AUTH_TYPE",
    "",
    "   ",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://host/path", "https://host/path"),
        ("s3://bucket/key.tif", "s3://bucket/key.tif"),
        ("http://user:pw@host:8000/x", "http://user:***@host:8000/x"),
        ("postgresql://odc:s3cret@db:5432/datacube", "postgresql://odc:***@db:5432/datacube"),
        ("http://user@host/x", "http://user@host/x"),
        ("http://:pw@host/x", "http://:***@host/x"),
        ("http://user:p%40ss@host/", "http://user:***@host/"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1"
            "&X-Amz-Signature=abc123&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=***"
            "&X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        ("https://h/?token=t0k&page=2", "https://h/?token=***&page=2"),
        ("https://h/?access_token=&x=1", "https://h/?access_token=&x=1"),
        ("https://h/?sv=1&sig=AbC%3D", "https://h/?sv=1&sig=***"),
        ("https://h/?flag&api_key=k", "https://h/?flag&api_key=***"),
        ("https://u:pw@h/?token=t#frag", "https://u:***@h/?token=***#frag"),
        ("http://u:pw@host:notaport/x", "http://u:***@host:notaport/x"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_url_custom_mask_and_non_str():
    assert redact_url("http://u:p@h/", mask="<hidden>") == "http://u:<hidden>@h/"
    assert redact_url(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("password", "hunter2", MASK),
        ("password", "", ""),
        ("password", None, None),
        ("token", 12345, MASK),
        ("credentials", {"user": "u", "password": "p"}, MASK),
        ("worker_cores", 2, 2),
        ("db_url", "postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        ("urls", ["http://u:p@h/", "s3://b/k"], ["http://u:***@h/", "s3://b/k"]),
        ("pair", ("a", "http://u:p@h/"), ("a", "http://u:***@h/")),
        ("nested", {"api_key": "k", "n": 1}, {"api_key": MASK, "n": 1}),
    ],
)
def test_redact_value(name, value, expected):
    assert redact_value(name, value) == expected


def test_redact_mapping_recursive_and_does_not_modify_input():
    original = {
        "worker_cores": 2,
        "aws_secret_access_key": "abc/def",
        "aws_access_key_id": "AKIAXXXX",
        "environment": {
            "AWS_SESSION_TOKEN": "tok",
            "AWS_DEFAULT_REGION": "ap-southeast-2",
            "layers": [{"password": "p1"}, {"name": "n"}],
        },
        "db": "postgresql://u:pw@h/db",
        "empty_secret": "",
        3: "non-string key",
    }
    snapshot = repr(original)
    out = redact_mapping(original)
    assert repr(original) == snapshot
    assert out == {
        "worker_cores": 2,
        "aws_secret_access_key": MASK,
        "aws_access_key_id": MASK,
        "environment": {
            "AWS_SESSION_TOKEN": MASK,
            "AWS_DEFAULT_REGION": "ap-southeast-2",
            "layers": [{"password": MASK}, {"name": "n"}],
        },
        "db": "postgresql://u:***@h/db",
        "empty_secret": "",
        3: "non-string key",
    }


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AWS_SECRET_ACCESS_KEY": "abcd1234", "AWS_DEFAULT_REGION": "us-east-1"}, {"abcd1234"}),
        ({"AWS_SESSION_TOKEN": "FwoGZXIvYXdzE"}, {"FwoGZXIvYXdzE"}),
        ({"DASK_GATEWAY__AUTH__KWARGS__PASSWORD": "gw-pass"}, {"gw-pass"}),
        ({"MY_TOKEN": "abc"}, set()),  # shorter than min_length
        ({"AWS_HTTPS": "NO", "HOME": "/root"}, set()),
        ({"AWS_SHARED_CREDENTIALS_FILE": "/root/.aws/credentials"}, set()),
    ],
)
def test_secret_values_from_environ(environ, expected):
    assert secret_values_from_environ(environ) == expected


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("key=abc123 and abc123", ["abc123"], "key=*** and ***"),
        ("long: abc123456, short: abc123", ["abc123", "abc123456"], "long: ***, short: ***"),
        ("regex chars a.b*c", ["a.b*c"], "regex chars ***"),
        ("nothing here", ["zzz"], "nothing here"),
        ("see http://u:pw@h/x", [], "see http://u:***@h/x"),
        ("empty secrets ignored", ["", None], "empty secrets ignored"),
    ],
)
def test_redact_text(text, secrets, expected):
    assert redact_text(text, [s for s in secrets if s is not None]) == expected


def test_registered_secrets_are_scrubbed_everywhere():
    register_secret("registered-value")
    register_secret("")
    register_secret("abc")  # too short to scrub from free text
    register_secret(None)
    assert sec.registered_secrets() == {"registered-value"}
    assert redact_text("a registered-value b") == "a *** b"
    assert redact_text("a registered-value b", registered=False) == "a registered-value b"
    assert RedactingFilter(from_environ=False).redact("registered-value") == MASK


def _record(msg, *args, exc_info=None):
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, exc_info)


def test_filter_scrubs_message_args_and_exceptions():
    flt = RedactingFilter(secrets=["s3cr3t-value"], environ={"AWS_SESSION_TOKEN": "env-token-xyz"})
    rec = _record(
        "connect %s with %r to %s", "s3cr3t-value", {"t": "env-token-xyz"}, "http://u:pw@h/"
    )
    assert flt.filter(rec) is True
    assert rec.getMessage() == "connect *** with {'t': '***'} to http://u:***@h/"
    assert rec.args is None
    try:
        raise RuntimeError("failed with s3cr3t-value")
    except RuntimeError:
        import sys

        rec = _record("boom", exc_info=sys.exc_info())
    flt.filter(rec)
    assert "s3cr3t-value" not in rec.exc_text and "failed with ***" in rec.exc_text
    formatted = logging.Formatter().format(rec)
    assert "s3cr3t-value" not in formatted


def test_filter_on_a_handler_reads_environment(monkeypatch, caplog):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    flt = RedactingFilter()
    flt.add_secret("added-later")
    flt.add_secret(None)
    assert {"wJalrXUtnFEMI/K7MDENG", "added-later"} <= flt.secrets
    caplog.handler.addFilter(flt)
    try:
        logging.getLogger("odc_ndvi_plugin.test").warning(
            "key %s region %s extra %s",
            "wJalrXUtnFEMI/K7MDENG",
            "us-west-2",
            "added-later",
        )
    finally:
        caplog.handler.removeFilter(flt)
    assert caplog.records[-1].getMessage() == "key *** region us-west-2 extra ***"
    monkeypatch.setenv("AWS_SESSION_TOKEN", "rotated-session-token")
    assert "rotated-session-token" not in flt.secrets
    flt.refresh_environ()
    assert "rotated-session-token" in flt.secrets


def test_filter_without_environ_and_broken_format():
    flt = RedactingFilter(from_environ=False, environ={"PASSWORD": "ignored-value"})
    assert flt.secrets == frozenset()
    rec = _record("%d items", "not-a-number")
    assert flt.filter(rec) is True  # left for the handler to report
    assert rec.args == ("not-a-number",)


def test_working_directory_is_not_redacted_but_a_password_variable_is():
    """Issue 15: ``PWD`` counted as a secret name, so every path under the current
    directory became ``***`` in log lines (``failed to write file://***/mnt/out/...``)."""
    cwd = "/home/operator/jobs"
    flt = RedactingFilter(
        environ={"PWD": cwd, "OLDPWD": "/home/operator", "MYSQL_PWD": "hunter2-pw"}
    )
    rec = _record("failed to write %s with %s", f"file://{cwd}/mnt/out/a.tif", "hunter2-pw")
    flt.filter(rec)
    assert rec.getMessage() == f"failed to write file://{cwd}/mnt/out/a.tif with ***"


@pytest.mark.parametrize(
    "url",
    ["postgresql:///datacube", "file:///data/out/x.tif", "s3://bucket/key?x=1", "https://h/p#f"],
)
def test_a_url_without_secrets_is_returned_as_given(url):
    """A URL with nothing to hide comes back unchanged (urlunsplit would turn
    postgresql:///datacube, the default-socket form, into postgresql:/datacube)."""
    assert sec.redact_url(url) == url


def test_keyword_value_connection_strings_hide_their_password():
    text = "connect host=db password=s3cr3t-pw dbname=dc; Driver={x};Password=an0ther;User=u"
    out = sec.redact_text(text, registered=False)
    assert "s3cr3t-pw" not in out and "an0ther" not in out
    assert "host=db" in out and "dbname=dc" in out and "User=u" in out
