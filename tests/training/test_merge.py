"""Merge: the merged standalone checkpoint equals the LoRA model and loads through load_lisa;
fine-tuning starts from a checkpoint in the released layout."""

import pytest
import torch

from lisa_model import load_lisa
from lisa_model.checkpoint import read_state_dict
from tests.helpers.released_layout import make_released_checkpoint
from tests.helpers.train_runs import mini_root, small_config
from training.data.collate import collate, forward_kwargs
from training.data.reason_seg import ReasonSegDataset
from training.merge import load_run_model
from training.merge import main as merge_main
from training.train import Trainer


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return mini_root(tmp_path_factory)


@pytest.fixture(scope="module")
def trained_run(root, tmp_path_factory):
    run = tmp_path_factory.mktemp("merge_run")
    Trainer(small_config(root, run, train={"steps": 4, "grad_accum": 1}, eval={"every": 4})).fit()
    return run


def _outputs(model, tokenizer, root):
    dataset = ReasonSegDataset(f"{root}/reason_seg/ReasonSeg", "val", train=False)
    batch = forward_kwargs(collate([dataset[0], dataset[2]], tokenizer, model.config))
    with torch.no_grad():
        out = model(**batch)
        ids = batch["input_ids"].clamp(min=0)
        lm_logits = model.language_model(input_ids=ids, attention_mask=batch["attention_mask"]).logits
    return torch.cat([m.flatten() for m in out.mask_logits]), torch.cat(out.seg_embeddings), lm_logits


def test_merged_checkpoint_equals_lora_model_and_loads(trained_run, root, tmp_path):
    lora_model, tokenizer, _, _ = load_run_model(trained_run, "best")
    deltas = [p.abs().max().item() for n, p in lora_model.named_parameters() if ".lora_B." in n]
    assert max(deltas) > 0  # the adapters were trained, so merging changes the base weights
    expected = _outputs(lora_model, tokenizer, root)

    output = merge_main(["--run", str(trained_run), "--output", str(tmp_path / "merged")])
    keys = set(read_state_dict(output))
    assert "model.layers.0.self_attn.q_proj.weight" in keys and not any("lora" in k or "base_layer" in k for k in keys)
    merged, merged_tokenizer = load_lisa(output)
    assert merged_tokenizer.convert_tokens_to_ids("[SEG]") == merged.config.seg_token_id
    for got, want in zip(_outputs(merged, merged_tokenizer, root), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_finetune_from_a_released_checkpoint(root, tmp_path):
    # The reference crashes here (no loss weights on its model); ours passes them explicitly.
    checkpoint, clip, _, _ = make_released_checkpoint(tmp_path / "released")
    config = small_config(root, tmp_path / "run", model={"source": str(checkpoint), "vision_tower": str(clip)},
                          train={"steps": 2, "grad_accum": 1}, data={"kind": "reason_seg"})
    trainer = Trainer(config)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    records = trainer.fit()
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in records)
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("text_hidden_fcs" in n for n in changed) and any(".lora_B." in n for n in changed)
    # And the fine-tuned run merges back into the released layout.
    merged, _ = load_lisa(merge_main(["--run", str(tmp_path / "run"), "--output", str(tmp_path / "out"),
                                      "--checkpoint", "last"]))
    assert merged.config.seg_token_id == trainer.model.config.seg_token_id
