"""Speaking the robot's answers, ROS-free: a text-to-speech command run once per text, in order,
with mute raised around it so that the speech node never hears the robot as a command.

`speak_to_file` renders a text with espeak-ng into a WAV file instead: the voice leg, the
adaptation data and the speech tests and bench all speak that way.

The TTS program is a command line (`espeak-ng` by default; any program that takes the text as
its last argument and returns when done speaking). Mute stays up `tail_s` after the program
ends, for the room's echo and the audio buffers still playing.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence


class SynthesisError(RuntimeError):
    """espeak-ng is missing or could not speak, with what to do."""


def speak_to_file(text: str, path: str | Path, voice: str = "en-us", speed: int = 160) -> Path:
    """`text` spoken by espeak-ng (`voice`, `speed` words per minute) into the WAV file `path` (22050 Hz mono).

    Raises:
        SynthesisError: espeak-ng is not installed, or it failed (e.g. an unknown voice).
    """
    if shutil.which("espeak-ng") is None:
        raise SynthesisError("espeak-ng is not installed (apt-get install espeak-ng; make setup installs it)")
    path = Path(path)
    done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0 or not path.is_file():
        raise SynthesisError(f"espeak-ng could not speak with voice {voice!r}: {done.stderr.strip()}")
    return path


class Speaker:
    """Texts in, spoken one after another on a thread; `set_mute(True/False)` around each.

    Arguments:
        command (Sequence[str]): the TTS program and its options; the text is appended.
        set_mute (callable(bool)): called with True before speaking, False `tail_s` after.
        tail_s (float): seconds mute stays up after the program ends.
        on_error (callable(str) | None): told when the program fails (it is skipped).

    Raises:
        FileNotFoundError: the program is not installed (with the apt package to install).
    """

    def __init__(self, command: Sequence[str], set_mute: Callable[[bool], None], tail_s: float = 0.3,
                 on_error: Callable[[str], None] | None = None):  # fmt: skip
        if not command or shutil.which(command[0]) is None:
            program = command[0] if command else "(none)"
            raise FileNotFoundError(f"text-to-speech program {program!r} not found (apt-get install espeak-ng)")
        self.command = list(command)
        self.set_mute = set_mute
        self.tail_s = tail_s
        self.on_error = on_error or (lambda message: None)
        self._texts: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="say", daemon=True)
        self._thread.start()

    def speak(self, text: str) -> None:
        """Queue `text` (blank texts are skipped)."""
        if text.strip():
            self._texts.put(text.strip())

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the thread."""
        self._texts.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (text := self._texts.get()) is not None:
            self.set_mute(True)
            try:
                done = subprocess.run([*self.command, text], capture_output=True, text=True, timeout=120)
                if done.returncode != 0:
                    self.on_error(f"{self.command[0]} exited with {done.returncode}: {done.stderr.strip()[-300:]}")
            except (OSError, subprocess.TimeoutExpired) as error:
                self.on_error(f"{self.command[0]} failed: {error}")
            finally:
                time.sleep(self.tail_s)
                if self._texts.empty():  # stay muted through a queue of texts
                    self.set_mute(False)
