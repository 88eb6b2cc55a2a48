"""Gapless document numbers on the billing table.

  SEQUENCE#<kind>-<year> / COUNTER            the last number taken (optimistic lock: ``last``)
  SEQUENCE#<kind>-<year> / DOCUMENT#<key>     which number a document took, written once

Taking a number is one ``TransactWriteItems`` of both items: the counter moves from n to n + 1 only if it
is still n, and the document's record is written only if the document has none. A retry of the same
document reads its record and gets the same number; two workers racing for the next number: one wins,
the other re-reads and takes the following one. No number is skipped, none is used twice.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from billing_core.domain.document_numbers import DocumentKind, DocumentNumber, sequence_name
from billing_core.domain.errors import TransientFailure

COUNTER_SK = "COUNTER"
ATTEMPTS = 20


class DocumentNumberItem(Model):
    class Meta:
        table_name = "unbound-billing-table"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    last = NumberAttribute(null=True)  # the counter: the last number taken
    number = NumberAttribute(null=True)  # a document's record: its number


class DynamoDocumentNumbers:
    def __init__(self, table_name: str, region: str) -> None:
        meta: Any = DocumentNumberItem.Meta
        meta.table_name, meta.region = table_name, region
        self._connection = Connection(region=region)

    def number_for(self, kind: DocumentKind, year: int, document_key: str) -> DocumentNumber:
        """The number of the document ``document_key`` (e.g. ``invoice:<partner>:<YYYY-MM>``): taken once,
        the same on every later call."""
        pk = f"SEQUENCE#{sequence_name(kind, year)}"
        record_sk = f"DOCUMENT#{document_key}"
        for _ in range(ATTEMPTS):
            known = self._get(pk, record_sk)
            if known is not None and known.number is not None:
                return DocumentNumber(kind, year, int(known.number))
            counter = self._get(pk, COUNTER_SK)
            last = int(counter.last) if counter is not None and counter.last is not None else 0
            next_number = last + 1
            try:
                with TransactWrite(connection=self._connection) as transaction:
                    condition = (
                        DocumentNumberItem.last == last
                        if counter is not None
                        else DocumentNumberItem.pk.does_not_exist()
                    )
                    transaction.save(DocumentNumberItem(pk, COUNTER_SK, last=next_number), condition=condition)
                    transaction.save(
                        DocumentNumberItem(pk, record_sk, number=next_number),
                        condition=DocumentNumberItem.pk.does_not_exist(),
                    )
                return DocumentNumber(kind, year, next_number)
            except TransactWriteError:
                continue  # another worker took the number (or numbered this document): read again
        raise TransientFailure(f"could not take a {kind.value} number for {document_key}; try again")

    @staticmethod
    def _get(pk: str, sk: str) -> DocumentNumberItem | None:
        try:
            return DocumentNumberItem.get(pk, sk, consistent_read=True)
        except DocumentNumberItem.DoesNotExist:
            return None
