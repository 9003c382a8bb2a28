"""``EmailAddress``: pydantic's ``EmailStr`` rules, with ``email-validator`` loaded only when an
address is actually checked.

Why not ``EmailStr`` itself: it imports ``email-validator`` (and with it ``email``, ``idna`` and
their tables, ~25 ms) when a model using it is defined, so every exporter process paid that at
start-up though few exports send e-mail. Validation, normalization, error messages and the JSON
schema (``format: email``) are pydantic's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

if TYPE_CHECKING:
    EmailAddress = Annotated[str, ...]
else:

    class EmailAddress:
        """An e-mail address, normalized as ``EmailStr`` normalizes it."""

        @classmethod
        def __get_pydantic_core_schema__(
            cls, source: type[Any], handler: GetCoreSchemaHandler
        ) -> core_schema.CoreSchema:
            return core_schema.no_info_after_validator_function(
                _validated, core_schema.str_schema()
            )

        @classmethod
        def __get_pydantic_json_schema__(
            cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
        ) -> JsonSchemaValue:
            field_schema = handler(schema)
            field_schema.update(type="string", format="email")
            return field_schema


def _validated(value: str) -> str:
    from pydantic.networks import validate_email  # imports email-validator: first use only

    return validate_email(value)[1]
