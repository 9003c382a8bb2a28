"""exportd.security.reports: which result reports the operator trusts. A report is trusted only
with the
request's own key and a file under the request's folder; keys differ per request uid."""

from __future__ import annotations

import pytest

from exportd.security.reports import refusal, report_key, sign_result, under_request

SECRET = "operator-only-secret"
RESULT = {"objectKey": "exports/a/users.csv", "rowsWritten": 3}


@pytest.mark.parametrize(
    ("key", "inside"),
    [
        ("exports/a/users.csv", True),
        ("exports/a/sub/users.csv", True),
        ("exports/ab/users.csv", False),
        ("exports/a/../b/users.csv", False),
        ("exports/a/", False),
        ("exports/a//x.csv", False),
        ("other/exports/a/x.csv", False),
    ],
)
def test_only_keys_inside_the_request_folder_are_accepted(key: str, inside: bool) -> None:
    assert under_request(key, "a") is inside


def test_each_request_has_its_own_key_and_only_it_signs_a_trusted_report() -> None:
    own, other = report_key(SECRET, "uid-a"), report_key(SECRET, "uid-b")
    assert own != other and report_key("another-secret", "uid-a") != own
    assert refusal(SECRET, "a", "uid-a", RESULT, sign_result(own, "a", RESULT)) is None
    assert refusal(SECRET, "a", "uid-a", RESULT, sign_result(other, "a", RESULT))
    assert refusal(SECRET, "a", "uid-a", RESULT, None)
    changed = {**RESULT, "rowsWritten": 4}  # the signed figures cannot be altered
    assert refusal(SECRET, "a", "uid-a", changed, sign_result(own, "a", RESULT))


def test_without_a_secret_only_the_folder_is_checked() -> None:
    assert refusal(None, "a", "uid-a", RESULT, None) is None
    assert refusal(None, "b", "uid-b", RESULT, None)
