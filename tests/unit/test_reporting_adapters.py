"""SES mailer and S3 usage-report store against moto in-process (mock_aws: no sockets, nothing real)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from billing_core.adapters.s3_reports import S3UsageReports
from billing_core.adapters.ses_mailer import SesMailer
from billing_core.domain.errors import TransientFailure
from billing_core.domain.reporting import RenderedEmail

REGION = "us-east-1"
SENDER = "billing@example.com"
BUCKET = "usage-reports-test"
EMAIL = RenderedEmail(
    subject="Billing report January 2026: Müller GmbH",
    text="Total: EUR 12.50\n- Müller € line",
    html="<p>Total: <strong>EUR 12.50</strong></p><p>Müller &amp; Co €</p>",
)
CSV_TEXT = 'workspace_id,workspace_name\r\nws-1,"Müller, GmbH"\r\n'
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SES")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region, no shared config, no endpoint override left by another fixture,
    and a fresh default boto3 session so nothing cached from earlier tests is reused."""
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in (*ENDPOINT_VARIABLES, "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def bucket(aws: None) -> str:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def sent_messages() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


# --- laziness and endpoints ----------------------------------------------------------------------


def test_clients_are_created_on_first_use_only(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[str] = []
    real_client: Callable[..., Any] = boto3.client

    def counting_client(service: str, *args: Any, **kwargs: Any) -> Any:
        created.append(service)
        return real_client(service, *args, **kwargs)

    monkeypatch.setattr(boto3, "client", counting_client)
    mailer, reports = SesMailer(SENDER), S3UsageReports(BUCKET)
    assert created == []
    reports.download_url("a.csv")
    reports.download_url("b.csv")
    assert mailer.client is mailer.client
    assert created == ["s3", "ses"]


def test_endpoint_is_left_to_botocore_so_aws_endpoint_url_applies(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:5999")
    assert SesMailer(SENDER).client.meta.endpoint_url == "http://localhost:5999"
    url = S3UsageReports(BUCKET).download_url("k.csv")  # signing is local: nothing is contacted
    assert url.startswith("http://localhost:5999/")


# --- SES -------------------------------------------------------------------------------------------


def test_send_delivers_subject_text_and_html_in_utf8(aws: None) -> None:
    mailer = SesMailer(SENDER)
    mailer.client.verify_email_identity(EmailAddress=SENDER)
    requested: list[dict[str, Any]] = []
    mailer.client.meta.events.register(
        "provide-client-params.ses.SendEmail", lambda params, **_: requested.append(params)
    )

    message_id = mailer.send("owner@partner.example", EMAIL)

    [message] = sent_messages()
    assert message.id == message_id
    assert message.source == SENDER
    assert message.destinations["ToAddresses"] == ["owner@partner.example"]
    assert message.subject == EMAIL.subject
    assert message.body == EMAIL.html  # moto keeps the HTML body when both are sent
    [params] = requested
    assert params["Message"]["Body"] == {
        "Text": {"Data": EMAIL.text, "Charset": "UTF-8"},
        "Html": {"Data": EMAIL.html, "Charset": "UTF-8"},
    }
    assert params["Message"]["Subject"] == {"Data": EMAIL.subject, "Charset": "UTF-8"}


def test_send_from_unverified_sender_is_not_transient(aws: None) -> None:
    with pytest.raises(ClientError) as raised:
        SesMailer("nobody@unverified.example").send("owner@partner.example", EMAIL)
    assert raised.value.response["Error"]["Code"] == "MessageRejected"
    assert sent_messages() == []


@pytest.mark.parametrize(
    ("code", "status"),
    [("Throttling", 400), ("ServiceUnavailable", 503), ("InternalFailure", 500), ("SomethingNew", 502)],
)
def test_ses_throttling_and_server_errors_are_transient(aws: None, code: str, status: int) -> None:
    mailer = SesMailer(SENDER)
    with Stubber(mailer.client) as stubber:
        stubber.add_client_error("send_email", service_error_code=code, http_status_code=status)
        with pytest.raises(TransientFailure) as raised:
            mailer.send("owner@partner.example", EMAIL)
    assert code in str(raised.value)
    assert isinstance(raised.value.__cause__, ClientError)


def test_ses_client_errors_propagate_unchanged(aws: None) -> None:
    mailer = SesMailer(SENDER)
    with Stubber(mailer.client) as stubber:
        stubber.add_client_error("send_email", service_error_code="AccountSendingPausedException")
        with pytest.raises(ClientError) as raised:
            mailer.send("owner@partner.example", EMAIL)
    assert raised.value.response["Error"]["Code"] == "AccountSendingPausedException"


# --- S3 --------------------------------------------------------------------------------------------


def test_put_stores_csv_as_utf8_text_csv_encrypted(bucket: str) -> None:
    reports = S3UsageReports(bucket)
    reports.put("usage-reports/p-1/2026-01.csv", CSV_TEXT)

    stored = boto3.client("s3").get_object(Bucket=bucket, Key="usage-reports/p-1/2026-01.csv")
    assert stored["Body"].read().decode("utf-8") == CSV_TEXT
    assert stored["ContentType"] == "text/csv; charset=utf-8"
    assert stored["ServerSideEncryption"] == "AES256"


def test_exists(bucket: str) -> None:
    reports = S3UsageReports(bucket)
    assert reports.exists("usage-reports/p-1/2026-01.csv") is False
    reports.put("usage-reports/p-1/2026-01.csv", CSV_TEXT)
    assert reports.exists("usage-reports/p-1/2026-01.csv") is True
    assert reports.exists("usage-reports/p-1/2026-02.csv") is False


def test_put_to_a_missing_bucket_propagates(aws: None) -> None:
    with pytest.raises(ClientError) as raised:
        S3UsageReports("no-such-bucket").put("k.csv", CSV_TEXT)
    assert raised.value.response["Error"]["Code"] == "NoSuchBucket"


@pytest.mark.parametrize(("ttl", "expected"), [(3600, "900"), (900, "900"), (60, "60")])
def test_download_url_expires_within_15_minutes(aws: None, ttl: int, expected: str) -> None:
    url = S3UsageReports(BUCKET, url_ttl_seconds=ttl).download_url("usage-reports/p-1/2026-01.csv")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == [expected]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert urlsplit(url).path.endswith("usage-reports/p-1/2026-01.csv")


def test_download_url_fetches_the_report(bucket: str) -> None:
    reports = S3UsageReports(bucket, url_ttl_seconds=3600)
    reports.put("usage-reports/p-1/2026-01.csv", CSV_TEXT)
    response = requests.get(reports.download_url("usage-reports/p-1/2026-01.csv"), timeout=5)  # served by moto
    assert response.status_code == 200
    assert response.content.decode("utf-8") == CSV_TEXT


@pytest.mark.parametrize("ttl", [0, -5])
def test_url_ttl_must_be_positive(ttl: int) -> None:
    with pytest.raises(ValueError):
        S3UsageReports(BUCKET, url_ttl_seconds=ttl)


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("InternalError", 500), ("RequestTimeout", 400)])
def test_s3_throttling_and_server_errors_are_transient(aws: None, code: str, status: int) -> None:
    reports = S3UsageReports(BUCKET)
    with Stubber(reports.client) as stubber:
        stubber.add_client_error("put_object", service_error_code=code, http_status_code=status)
        stubber.add_client_error("head_object", service_error_code=code, http_status_code=status)
        with pytest.raises(TransientFailure):
            reports.put("k.csv", CSV_TEXT)
        with pytest.raises(TransientFailure):
            reports.exists("k.csv")


def test_s3_access_denied_propagates(aws: None) -> None:
    reports = S3UsageReports(BUCKET)
    with Stubber(reports.client) as stubber:
        stubber.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
        stubber.add_client_error("head_object", service_error_code="403", http_status_code=403)
        with pytest.raises(ClientError) as put_error:
            reports.put("k.csv", CSV_TEXT)
        with pytest.raises(ClientError) as head_error:
            reports.exists("k.csv")
    assert put_error.value.response["Error"]["Code"] == "AccessDenied"
    assert head_error.value.response["Error"]["Code"] == "403"
