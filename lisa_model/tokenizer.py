"""An offline LLaMA-like tokenizer for the tiny models used in tests and demos.

It behaves like LLaMA's SentencePiece tokenizer where that matters to LISA: a
leading-space marker "▁" on every word and on the start of every encoded text,
ids 0/1/2 for <unk>/<s>/</s>, and LISA's added tokens after the base vocabulary in
the released LISA-7B-v1 order. It is trained in memory with the `tokenizers`
library, so no download is needed.
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .processing.conversation import CONVERSATION_TEMPLATES
from .processing.tokenization import LISA_ADDED_TOKENS, SEG_TOKEN

_CORPUS = [
    *(template.system for template in CONVERSATION_TEMPLATES.values()),
    "USER: ASSISTANT: [INST] [/INST] <<SYS>> <</SYS>>",
    "Can you segment the object in this image? Please segment the object in this image.",
    "What is the object in this image? Please respond with segmentation mask.",
    "Please output segmentation mask. Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason. give some explanation.",
    "It is. Sure, it is. Sure, the segmentation result is. There is no such object.",
    "red green blue yellow orange purple white black gray brown pink cyan",
    "square circle triangle box ball cup bottle knife scissors apple banana table floor chair",
    "left right top bottom middle small large big tiny round sharp soft heavy light",
    "something I can use to cut this paper where should the food scraps go",
    "which object would roll off the table what can hold water the fruit with most vitamin",
    "because it has a sharp blade and can be used for cutting",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) - / a an the and or of to in on with for is are",
]


def build_tiny_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A small byte-pair tokenizer with LISA's added tokens; deterministic for a given size."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    alphabet = [chr(code) for code in range(32, 127)] + ["▁", "\n"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",  # as the released models: pad = unk (id 0)
    )
    # Plain added tokens (not special), as LISA adds them; the order gives the
    # released layout's ids relative to the base vocabulary.
    wrapped.add_tokens(list(LISA_ADDED_TOKENS))
    return wrapped


def seg_token_id(tokenizer) -> int:
    """The id of [SEG]; a clear error when the tokenizer lacks it or splits it."""
    ids = tokenizer.encode(SEG_TOKEN, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"the tokenizer encodes {SEG_TOKEN} as {ids}, not as one token id; "
            "LISA needs [SEG] as a single added token"
        )
    return ids[0]
