"""The Qualtrics credentials check: GET /API/v3/whoami, and what its answer says about the configuration.

Used by the worker once per execution environment (worker_app.py) and by ``make check-qualtrics``
(``segment-qualtrics check-qualtrics``, tools/ops_commands.py). It never raises: every problem becomes a line in
``WhoamiReport.problems``. The call goes through ``QualtricsClient`` like every other request with the API token:
the same URL rule, no redirects.

A datacenter other than the brand's still answers GETs, but ``meta.notice`` says the request was proxied,
and POSTs through that proxy have been seen failing with 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segment_qualtrics.adapters.qualtrics import QualtricsClient
from segment_qualtrics.destination.errors import DestinationError

WHOAMI_PATH = "/API/v3/whoami"
TIMEOUT = (2.0, 3.0)   # connect, read: a check must stay cheap; the real calls have their own timeouts


@dataclass
class WhoamiReport:
    status: int | None = None
    datacenter: str | None = None            # what Qualtrics says the brand's datacenter is
    expected_datacenter: str | None = None   # the one in the secret (None: QUALTRICS_BASE_URL overrides it)
    notice: str | None = None
    brand_id: str | None = None
    account_type: str | None = None
    request_id: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def log_fields(self) -> dict[str, Any]:
        """What may be logged: no user name, no email."""
        fields = {"httpStatus": self.status, "datacenter": self.datacenter,
                  "expectedDatacenter": self.expected_datacenter, "brandId": self.brand_id,
                  "accountType": self.account_type, "qualtricsRequestId": self.request_id,
                  "notice": self.notice, "problems": self.problems or None}
        return {k: v for k, v in fields.items() if v is not None}


def check_whoami(client: QualtricsClient, *, expected_datacenter: str | None = None,
                 timeout: tuple[float, float] = TIMEOUT) -> WhoamiReport:
    report = WhoamiReport(expected_datacenter=expected_datacenter)
    try:
        data = client.whoami(timeout=timeout)
        report.status = 200
    except DestinationError as exc:
        report.status, report.request_id = exc.status, exc.request_id
        if exc.status == 401:
            report.problems.append("Qualtrics rejected the API token (401): set apiToken in the Qualtrics secret")
        elif exc.status == 403:
            report.problems.append("the API token may not call whoami (403): check the user's API permission")
        elif exc.status is not None and exc.code != "qualtrics_redirect":
            report.problems.append(f"whoami answered {exc.status}")
        else:   # no answer, a redirect, a URL the token may not go to, unusable credentials
            report.problems.append(exc.message)
        return report
    meta, result = data.get("meta"), data.get("result")
    meta = meta if isinstance(meta, dict) else {}
    result = result if isinstance(result, dict) else {}
    report.request_id = _text(meta.get("requestId"))
    report.notice = _text(meta.get("notice"))
    report.datacenter = _text(result.get("datacenter"))
    report.brand_id = _text(result.get("brandId"))
    report.account_type = _text(result.get("accountType"))

    if report.notice:
        report.problems.append(f"Qualtrics notice: {report.notice!r}; the datacenter in the secret is probably "
                               "not the brand's, and POSTs through the proxy may fail with 400")
    if expected_datacenter and report.datacenter and \
            _datacenter(report.datacenter) != _datacenter(expected_datacenter):
        report.problems.append(f"the secret says datacenter {expected_datacenter!r} but the brand's is "
                               f"{report.datacenter!r}: set datacenter in the Qualtrics secret")
    return report


def _text(value: Any) -> str | None:
    # The answer is not trusted to have the documented types: a non-string is treated as absent.
    return value if isinstance(value, str) and value else None


def _datacenter(value: str) -> str:
    # "cornell.ca1" (an organisation-prefixed host) and "CA1" both name datacenter ca1.
    return value.strip().lower().rsplit(".", 1)[-1]
