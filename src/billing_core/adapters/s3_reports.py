"""Per-device usage reports (CSV) in S3, downloaded through short-lived presigned links.

Objects are written with SSE-S3 (AES256). A download link is valid for at most 15 minutes, whatever
the configuration asks for. The client is created on first use; the endpoint is left to botocore, which
honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (the local stack's moto server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from billing_core.adapters.aws_errors import error_code, is_retryable
from billing_core.domain.errors import TransientFailure

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPE = "text/csv; charset=utf-8"
MAX_URL_TTL_SECONDS = 900
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3UsageReports:
    def __init__(self, bucket: str, url_ttl_seconds: int = MAX_URL_TTL_SECONDS) -> None:
        if url_ttl_seconds < 1:
            raise ValueError(f"url_ttl_seconds must be positive, got {url_ttl_seconds}")
        self.bucket = bucket
        self.url_ttl_seconds = min(url_ttl_seconds, MAX_URL_TTL_SECONDS)
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            import boto3  # here: only functions that write reports pay for the import
            from botocore.config import Config

            # SigV4 so the presigned link carries X-Amz-Expires (and SigV2 is deprecated anyway).
            self._client = boto3.client("s3", config=Config(signature_version="s3v4"))
        return self._client

    def put(self, key: str, csv_text: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=csv_text.encode("utf-8"),
                ContentType=CONTENT_TYPE,
                ServerSideEncryption="AES256",
            )
        except ClientError as error:
            if is_retryable(error):
                raise TransientFailure(f"s3 put_object: {error_code(error)}") from error
            raise
        except (ConnectionError, HTTPClientError) as error:
            raise TransientFailure(f"s3 put_object: {error}") from error

    def download_url(self, key: str) -> str:
        """A presigned GET valid for ``min(url_ttl_seconds, 900)`` seconds. Signing is local: no request."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_ttl_seconds
        )

    def exists(self, key: str) -> bool:
        """Whether the report was written. Needs s3:ListBucket on the bucket: without it S3 answers a
        missing key with 403, which propagates."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return False
            if is_retryable(error):
                raise TransientFailure(f"s3 head_object: {error_code(error)}") from error
            raise
        except (ConnectionError, HTTPClientError) as error:
            raise TransientFailure(f"s3 head_object: {error}") from error
        return True
