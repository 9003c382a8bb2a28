"""``EmailAddress`` validates and normalizes exactly as pydantic's ``EmailStr`` and has its JSON
schema, while a process that checks no address never imports ``email-validator``."""

from __future__ import annotations

import pytest
from pydantic import EmailStr, TypeAdapter, ValidationError
from tests.conftest import loaded_by_import

from exportd.contract.addresses import EmailAddress
from exportd.contract.spec import ExportRequestBody

OURS = TypeAdapter(EmailAddress)
PYDANTICS = TypeAdapter(EmailStr)


@pytest.mark.parametrize(
    "address",
    ["ana@example.com", "Ana@EXAMPLE.com", "ana.maria+x@sub.example.org", "用户@例子.广告"],
)
def test_valid_addresses_are_normalized_as_email_str_does(address: str) -> None:
    assert OURS.validate_python(address) == PYDANTICS.validate_python(address)


@pytest.mark.parametrize(
    "address", ["", "plain", "a@", "@example.com", "a b@example.com", "a@example..com", "x" * 300]
)
def test_invalid_addresses_fail_with_email_str_s_message(address: str) -> None:
    with pytest.raises(ValidationError) as ours:
        OURS.validate_python(address)
    with pytest.raises(ValidationError) as theirs:
        PYDANTICS.validate_python(address)
    assert ours.value.errors()[0]["msg"] == theirs.value.errors()[0]["msg"]


def test_the_json_schema_says_format_email() -> None:
    schema = ExportRequestBody.model_json_schema()["properties"]["email"]
    assert {"type": "string", "format": "email"} in schema["anyOf"]
    assert OURS.json_schema() == PYDANTICS.json_schema()


def test_defining_the_contract_does_not_import_email_validator() -> None:
    modules = "exportd.contract.spec, exportd.settings"
    assert loaded_by_import(modules, ("email_validator",)) == []
