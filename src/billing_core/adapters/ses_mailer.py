"""Sends rendered e-mails through Amazon SES (``SendEmail``: text and HTML bodies, UTF-8).

The client is created on first use, so building the adapter costs nothing; the endpoint is left to
botocore, which honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SES`` (the local stack's moto server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from billing_core.adapters.aws_errors import error_code, is_retryable
from billing_core.domain.errors import TransientFailure
from billing_core.domain.reporting import RenderedEmail

if TYPE_CHECKING:
    from mypy_boto3_ses import SESClient

CHARSET = "UTF-8"


class SesMailer:
    def __init__(self, sender: str) -> None:
        self.sender = sender
        self._client: SESClient | None = None

    @property
    def client(self) -> SESClient:
        if self._client is None:
            import boto3  # here: only functions that send mail pay for the import

            self._client = boto3.client("ses")
        return self._client

    def send(self, to: str, email: RenderedEmail) -> str:
        """Send one message; returns the SES MessageId. Raises ``TransientFailure`` when SES throttles
        or fails on its side; other errors (e.g. ``MessageRejected``) propagate."""
        try:
            response = self.client.send_email(
                Source=self.sender,
                Destination={"ToAddresses": [to]},
                Message={
                    "Subject": {"Data": email.subject, "Charset": CHARSET},
                    "Body": {
                        "Text": {"Data": email.text, "Charset": CHARSET},
                        "Html": {"Data": email.html, "Charset": CHARSET},
                    },
                },
            )
        except ClientError as error:
            if is_retryable(error):
                raise TransientFailure(f"ses send_email: {error_code(error)}") from error
            raise
        except (ConnectionError, HTTPClientError) as error:
            raise TransientFailure(f"ses send_email: {error}") from error
        return response["MessageId"]
