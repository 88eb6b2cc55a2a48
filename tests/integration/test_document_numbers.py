"""Gapless document numbers on DynamoDB Local (issue 15, item 1): racing workers take consecutive
numbers with no gap and no duplicate, and a document retried by any worker keeps its one number."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest

from billing_core.adapters.dynamodb.document_numbers import DynamoDocumentNumbers
from billing_core.domain.document_numbers import DocumentKind, DocumentNumber
from billing_core.settings import BillingSettings
from infra.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture
def numbers(local_stack: LocalStack, settings: BillingSettings) -> DynamoDocumentNumbers:
    return DynamoDocumentNumbers(settings.billing_table, settings.aws_region)


def race(workers: int, work: list[tuple[DynamoDocumentNumbers, str]], year: int) -> list[DocumentNumber]:
    taken: list[DocumentNumber] = []
    lock, barrier = threading.Lock(), threading.Barrier(workers)

    def worker(share: list[tuple[DynamoDocumentNumbers, str]]) -> None:
        barrier.wait()
        for store, key in share:
            number = store.number_for(DocumentKind.INVOICE, year, key)
            with lock:
                taken.append(number)

    threads = [threading.Thread(target=worker, args=(work[index::workers],)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return taken


def test_racing_workers_take_consecutive_numbers_without_gaps_or_duplicates(numbers: DynamoDocumentNumbers) -> None:
    year = 3000 + uuid.uuid4().int % 5000  # a sequence of its own
    documents = [f"invoice:p-{n}:{year}-01" for n in range(40)]
    taken = race(8, [(numbers, key) for key in documents], year)
    assert sorted(n.sequence for n in taken) == list(range(1, 41))
    assert str(min(taken, key=lambda n: n.sequence)) == f"RE-{year}-000001"


def test_a_document_retried_by_racing_workers_keeps_one_number(numbers: DynamoDocumentNumbers) -> None:
    year = 3000 + uuid.uuid4().int % 5000
    taken = race(6, [(numbers, "invoice:p-retried:2027-03")] * 6 + [(numbers, f"other-{n}") for n in range(6)], year)
    counts = Counter(n.sequence for n in taken)
    ((retried, times),) = [(sequence, count) for sequence, count in counts.items() if count > 1]
    assert times == 6 and sorted(counts) == list(range(1, 8))  # once for the retried document, no gap
    assert numbers.number_for(DocumentKind.INVOICE, year, "invoice:p-retried:2027-03").sequence == retried


def test_invoices_and_credit_notes_count_separately(numbers: DynamoDocumentNumbers) -> None:
    year = 3000 + uuid.uuid4().int % 5000
    invoice = numbers.number_for(DocumentKind.INVOICE, year, "a")
    credit = numbers.number_for(DocumentKind.CREDIT_NOTE, year, "a")
    assert (str(invoice), str(credit)) == (f"RE-{year}-000001", f"GS-{year}-000001")
