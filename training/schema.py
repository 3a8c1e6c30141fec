"""The value types of the training config: pydantic checks every key's type and range
before anything is built (training.config, training.lora's LoraSettings).

Integers are strict: 1.5, true and "5" are refused, not rounded or converted (YAML
already types what it reads). Reals take integers and numeric strings (YAML 1.1 reads
`3e-4`, having no dot, as a string) but not bools, NaN or infinities.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, Field, Strict

# Every section refuses keys it does not know, so a typo does not pass silently.
SECTION = ConfigDict(extra="forbid")


def _number_from_string(value):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass  # not a number: the float check below says so
    return value


Count = Annotated[int, Strict(), Field(ge=1)]
NonNegative = Annotated[int, Strict(), Field(ge=0)]
Real = Annotated[float, BeforeValidator(_number_from_string), Strict(), Field(allow_inf_nan=False)]
NonNegativeReal = Annotated[Real, Field(ge=0)]
Probability = Annotated[Real, Field(ge=0, le=1)]
