"""A shorter JSON adapter for small local models (an option; `benchmarks/bench_lm.py` measures it).

DSPy's adapters describe every field twice (a field list, then a structure template) before the
instructions; a 1.5B model follows a short prompt better. This one sends the instructions first, one
line per output field (with a `Literal`'s allowed values), and the inputs as `name: value`. Parsing and
the JSON-schema constraint are JSONAdapter's, so every reply still parses.
"""

from __future__ import annotations

import typing
from typing import Any

import dspy
from dspy.adapters.utils import format_field_value, get_annotation_name
from dspy.signatures.signature import Signature


def _describe(name: str, field: Any) -> str:
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        kind = "one of: " + "; ".join(str(value) for value in typing.get_args(annotation))
    elif annotation is str:
        kind = "text"
    else:
        kind = get_annotation_name(annotation)
    desc = (field.json_schema_extra or {}).get("desc", "")
    extra = f" ({desc})" if desc and desc != f"${{{name}}}" else ""
    return f'- "{name}": {kind}{extra}'


class LeanJSONAdapter(dspy.JSONAdapter):
    """Instructions, a one-line-per-field JSON reply spec, and `name: value` inputs; nothing else."""

    def format_system_message(self, signature: type[Signature]) -> str:
        return f"{self.format_task_description(signature)}\n\n{self.format_field_structure(signature)}"

    def format_field_description(self, signature: type[Signature]) -> str:
        return ""

    def format_field_structure(self, signature: type[Signature]) -> str:
        lines = [_describe(name, field) for name, field in signature.output_fields.items()]
        return "Reply with only a JSON object with these keys:\n" + "\n".join(lines)

    def format_task_description(self, signature: type[Signature]) -> str:
        return signature.instructions.strip()

    def user_message_output_requirements(self, signature: type[Signature]) -> str | None:
        return None

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        parts = [prefix]
        for name, field in signature.input_fields.items():
            if name in inputs:
                parts.append(f"{name}: {format_field_value(field_info=field, value=inputs[name])}")
        parts.append(suffix)
        return "\n\n".join(part for part in parts if part).strip()


__all__ = ["LeanJSONAdapter"]
