"""Conversation templates of the released LISA models and a multi-turn conversation.

The prompt strings reproduce LLaVA's `llava_v1` and `llava_llama_2` templates, which
the released checkpoints were trained with, character for character.
"""

from dataclasses import dataclass, field

IMAGE_TOKEN = "<image>"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
# Private-use characters that fence user text inside a prompt string: `tokenize_prompt`
# encodes fenced text as plain text, so a typed "[SEG]" or "</s>" never becomes a
# control token. Only the template's own tokens do.
USER_TEXT_OPEN = "\ue000"
USER_TEXT_CLOSE = "\ue001"


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    system: str
    # "two": LLaVA's `SeparatorStyle.TWO`; "llama_2": Llama-2 chat with [INST] blocks.
    style: str
    roles: tuple[str, str] = ("USER", "ASSISTANT")


CONVERSATION_TEMPLATES = {
    "llava_v1": ConversationTemplate(
        name="llava_v1",
        system=(
            "A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."
        ),
        style="two",
    ),
    "llava_llama_2": ConversationTemplate(
        name="llava_llama_2",
        system=(
            "You are a helpful language and vision assistant. "
            "You are able to understand the visual content that the user provides, "
            "and assist the user with a variety of tasks using natural language."
        ),
        style="llama_2",
    ),
}


def get_template(name: str) -> ConversationTemplate:
    if name not in CONVERSATION_TEMPLATES:
        raise ValueError(
            f"unknown conversation template {name!r}; choose one of {sorted(CONVERSATION_TEMPLATES)}"
        )
    return CONVERSATION_TEMPLATES[name]


@dataclass
class Turn:
    user: str
    # None for the turn the model is about to answer.
    assistant: str | None = None


def render_prompt(template: ConversationTemplate, turns: list[Turn]) -> str:
    """Render turns into the prompt string; an open last turn (assistant None) ends
    with the cue the model continues from ("ASSISTANT:" or "[/INST]")."""
    if not turns:
        raise ValueError("a conversation needs at least one user turn")
    if any(turn.assistant is None for turn in turns[:-1]):
        raise ValueError("only the last turn may be unanswered")
    user_role, assistant_role = template.roles
    if template.style == "two":
        text = template.system + " "
        for turn in turns:
            text += f"{user_role}: {turn.user} "
            text += f"{assistant_role}:" if turn.assistant is None else f"{assistant_role}: {turn.assistant}</s>"
        return text
    if template.style == "llama_2":
        text = ""
        for index, turn in enumerate(turns):
            user = turn.user
            if index == 0:
                user = f"<<SYS>>\n{template.system}\n<</SYS>>\n\n{user}"
            # LLaVA joins turns with "<s>" and strips it from the very start.
            text += ("" if index == 0 else "<s>") + f"[INST] {user} [/INST]"
            if turn.assistant is not None:
                text += f" {turn.assistant} </s>"
        return text
    raise ValueError(f"unknown template style {template.style!r}")


def user_text(text: str) -> str:
    """`text` (a user's command) fenced as plain text for `tokenize_prompt`.

    Fence characters inside `text` are dropped, so it cannot close its fence early.
    """
    return USER_TEXT_OPEN + text.replace(USER_TEXT_OPEN, "").replace(USER_TEXT_CLOSE, "") + USER_TEXT_CLOSE


def image_user_message(command: str, use_im_start_end: bool) -> str:
    """The first user turn: the image placeholder, a newline, then the command."""
    image = f"{IM_START_TOKEN}{IMAGE_TOKEN}{IM_END_TOKEN}" if use_im_start_end else IMAGE_TOKEN
    return f"{image}\n{command}"


@dataclass
class Conversation:
    """A multi-turn conversation about the predictor's current image.

    The image placeholder goes into the first user turn only, so follow-up commands
    are answered in the context of earlier answers (and their [SEG] tokens). Commands
    are user text (`user_text`): whatever they contain, they tokenise as plain text.
    """

    template: str = "llava_v1"
    turns: list[Turn] = field(default_factory=list)

    def prompt_for(self, command: str, use_im_start_end: bool) -> str:
        """The prompt asking the model to answer `command` after the earlier turns."""
        return render_prompt(get_template(self.template), self.turns + [Turn(self._user(command, use_im_start_end))])

    def append(self, command: str, answer: str, use_im_start_end: bool) -> None:
        self.turns.append(Turn(self._user(command, use_im_start_end), answer))

    def _user(self, command: str, use_im_start_end: bool) -> str:
        # The image placeholder goes before the first command only.
        return image_user_message(user_text(command), use_im_start_end) if not self.turns else user_text(command)

    def reset(self) -> None:
        self.turns.clear()
