"""placeholder replaced below"""
from consentgate.audit.report import AuditReport, to_text


def to_html(report: AuditReport) -> str:
    return "<pre>" + to_text(report) + "</pre>"
