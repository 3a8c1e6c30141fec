"""Whether a transcript becomes a command: the one decision the node and the bench share."""

from __future__ import annotations

from dataclasses import dataclass

from .engines import Transcript

# Why a transcript is not sent.
EMPTY = "empty"
LOW_CONFIDENCE = "low_confidence"


@dataclass(frozen=True)
class Decision:
    """`send`: publish `transcript.text` as a command; otherwise `reason` says why not."""

    send: bool
    reason: str = ""


def decide(transcript: Transcript, min_confidence: float = 0.5) -> Decision:
    """A transcript with text and confidence >= `min_confidence` is a command; others are not, with a reason."""
    if not transcript.text.strip():
        return Decision(False, EMPTY)
    if transcript.confidence < min_confidence:
        return Decision(False, f"{LOW_CONFIDENCE}: {transcript.confidence:.2f} < {min_confidence:.2f}")
    return Decision(True)
