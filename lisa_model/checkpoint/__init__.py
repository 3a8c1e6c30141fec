"""Load and save LISA checkpoints in the layout of the released weights (xinlai/LISA-*).

A released checkpoint is a Hugging Face folder:

- `config.json`: a LLaVA config (`architectures` ["LISAForCausalLM"], `model_type`
  "llava") with the LLaMA sizes, the `mm_*` fields of the vision side, `vision_tower`
  (where CLIP comes from) and `out_dim` (the SAM prompt size). SAM's sizes are not
  in it; they are read off the tensor shapes.
- weights as `.bin` or `.safetensors`, one file or shards plus an index, with the
  names of the reference model: `model.*` and `lm_head.*` (LLaMA),
  `model.mm_projector.*`, `model.visual_model.*` (stock SAM names behind the
  prefix) and `model.text_hidden_fcs.0.{0,2}.*`. CLIP is not in them.
- tokenizer files, with LISA's added tokens ([SEG], <im_start>, <im_end>, and in
  LISA-7B-v1 <im_patch>) after the base vocabulary.

`load_lisa` reads that layout (ours too: `save_lisa` writes the same one, so a
model fine-tuned here also loads in the reference tooling). Precisions: see
`precision` (None: as stored; fp32/bf16/fp16; int8/int4 decoder layers on CUDA).

Checkpoints are untrusted input: `load_lisa` checks config.json's types and ranges and
its sizes against the weight files' headers before allocating anything, reads only
files inside the folder, unpickles `.bin` files with weights_only=True, refuses
non-finite weights, and raises `CheckpointError` (a ValueError) naming the file.

Modules by job: `errors`, `keys` (released names <-> ours), `files` (weight files), `config`
(config.json <-> LisaConfig), `skeleton` (the model on the meta device, filled from
tensors), `precision` (casting, quantisation), `load`, `save`, `tokenizer_files`.
"""

from .errors import CheckpointError
from .files import read_state_dict
from .load import load_lisa
from .precision import PRECISIONS
from .save import save_lisa

__all__ = ["PRECISIONS", "CheckpointError", "load_lisa", "read_state_dict", "save_lisa"]
