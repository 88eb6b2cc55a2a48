"""The billing history of the partner portal: invoices, usage-report and reconciliation-file downloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import InvalidRequest, NotFound
from billing_core.domain.identity import PartnerIdentity
from billing_core.domain.invoicing import Invoice
from billing_core.domain.reporting import reconciliation_key, usage_report_key
from billing_core.ports import InvoiceHistory, UsageReports
from billing_core.schemas import DownloadLink, InvoicePage, InvoiceView
from billing_core.services.views import invoice_summary_view, invoice_view

MAX_PAGE_SIZE = 100
# A listing carries an invoice's lines only up to this many: a full page (100 invoices x 50 lines x at most
# ~800 bytes a line in JSON, licence lines being the biggest) stays near 4 MB, under the 6 MB a Lambda
# response may carry through API Gateway. A bigger invoice is listed with its total and line count; its lines
# come with the invoice (GET /invoices/{month}: 5,000 seat lines are about 1.7 MB).
LISTED_LINES_MAX = 50
DOWNLOAD_LINK_SECONDS = 900


def parse_month(text: str, field_name: str = "month") -> BillingMonth:
    try:
        return BillingMonth.parse(text)
    except ValueError:
        raise InvalidRequest.for_field(field_name, "expected a month as YYYY-MM") from None


@dataclass
class BillingHistoryService:
    invoices: InvoiceHistory
    reports: UsageReports

    def list_invoices(self, identity: PartnerIdentity, *, limit: int, after: str | None) -> InvoicePage:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest.for_field("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
        # Summaries: one read of the invoices' own items, never the line chunks of big invoices.
        summaries, next_cursor = self.invoices.list_invoice_summaries(identity.partner_id, limit=limit, after=after)
        return InvoicePage(
            items=[invoice_summary_view(summary, max_lines=LISTED_LINES_MAX) for summary in summaries],
            next=next_cursor,
        )

    def get_invoice(self, identity: PartnerIdentity, month: str) -> InvoiceView:
        return invoice_view(self._invoice(identity, month))

    def usage_report_link(self, identity: PartnerIdentity, month: str) -> DownloadLink:
        return self._report_link(identity, month, usage_report_key, "usage report")

    def reconciliation_link(self, identity: PartnerIdentity, month: str) -> DownloadLink:
        """The invoice's reconciliation file (CSV, one row per line), written with its usage report."""
        return self._report_link(identity, month, reconciliation_key, "reconciliation file")

    def _report_link(
        self, identity: PartnerIdentity, month: str, key_of: Callable[[str, BillingMonth], str], what: str
    ) -> DownloadLink:
        invoice = self._invoice(identity, month)
        key = key_of(identity.partner_id, invoice.month)
        if invoice.reported_at is None or not self.reports.exists(key):
            raise NotFound(f"the {what} for {invoice.month} is not ready yet")
        return DownloadLink(url=self.reports.download_url(key), expires_in_seconds=DOWNLOAD_LINK_SECONDS)

    def _invoice(self, identity: PartnerIdentity, month: str) -> Invoice:
        invoice = self.invoices.load_invoice(identity.partner_id, parse_month(month))
        if invoice is None:
            raise NotFound(f"no invoice for {month}")
        return invoice
