"""Prompt embeddings: the encoders run as diffusers' ``FluxPipeline.encode_prompt`` runs them
(tiny random T5 and CLIP with word-level tokenizers written here), the file round trip, and
the conditioning of one prompt driving a FLUX velocity."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
tokenizers = pytest.importorskip("tokenizers")

from psijax.models import flux  # noqa: E402
from psijax.models.flux import prompts as fp  # noqa: E402

WORDS = "a photo of cat dog red blue on the grass sofa painting".split()
PROMPTS = ["a photo of a cat", "a red dog on the grass", "a blue sofa painting"]


def _tokenizer(folder, max_length: int):
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 2)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="</s>",
        model_max_length=max_length,
    )
    fast.save_pretrained(folder)
    return fast, len(vocab)


@pytest.fixture(scope="module")
def pipeline_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux_pipeline")
    clip_tok, vocab = _tokenizer(root / "tokenizer", fp.CLIP_MAX_LENGTH)
    t5_tok, _ = _tokenizer(root / "tokenizer_2", 16)
    torch.manual_seed(0)
    clip = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=fp.CLIP_MAX_LENGTH,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    ).eval()
    t5 = transformers.T5EncoderModel(
        transformers.T5Config(
            vocab_size=vocab,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=2,
        )
    ).eval()
    clip.save_pretrained(root / "text_encoder")
    t5.save_pretrained(root / "text_encoder_2")
    oracle = diffusers.FluxPipeline(
        scheduler=None,
        vae=None,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=None,
    )
    return root, oracle


def test_encodings_equal_diffusers_encode_prompt(pipeline_root, tmp_path):
    root, oracle = pipeline_root
    emb = fp.encode_prompts(PROMPTS, pipeline=str(root), max_length=16, batch_size=2)
    with torch.no_grad():
        t5, pooled, _ = oracle.encode_prompt(PROMPTS, None, max_sequence_length=16)
    np.testing.assert_allclose(emb.t5, t5.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(emb.clip_pooled, pooled.numpy(), atol=1e-5, rtol=1e-5)
    assert emb.t5.shape == (3, 16, 32) and emb.clip_pooled.shape == (3, 16)
    # the file round trip
    path = fp.save_prompt_embeddings(
        tmp_path / "p.safetensors", emb.prompts, emb.t5, emb.clip_pooled, encoders=emb.encoders
    )
    back = fp.load_prompt_embeddings(path)
    assert back.prompts == tuple(PROMPTS) and back.clip_text_embeds is None
    np.testing.assert_array_equal(back.t5, emb.t5)
    np.testing.assert_array_equal(back.clip_pooled, emb.clip_pooled)
    assert back.encoders["max_length"] == 16


def test_a_prompt_conditions_a_flux_velocity(tmp_path):
    rng = np.random.default_rng(0)
    config = flux.preset("tiny64")
    t5 = rng.standard_normal((2, 5, config.context_in_dim)).astype(np.float32)
    pooled = rng.standard_normal((2, config.vec_in_dim)).astype(np.float32)
    path = fp.save_prompt_embeddings(tmp_path / "p.safetensors", ["one", "two"], t5, pooled)
    emb = fp.load_prompt_embeddings(path)
    cond = emb.conditioning("two", 64, 32)  # pixels: an 8 × 4 latent, 4 × 2 tokens
    assert cond.img_ids.shape == (8, 3) and cond.txt.shape == (5, config.context_in_dim)
    np.testing.assert_array_equal(cond.y, pooled[1])
    model = flux.Flux(config, rngs=__import__("flax").nnx.Rngs(0))
    v = flux.to_velocity_fn(model, cond)(jax.numpy.zeros((8, 64)), 0.5)
    assert v.shape == (8, 64) and np.all(np.isfinite(v))
    assert emb.index(1) == 1


def test_bad_files_and_arguments_are_named(tmp_path):
    t5, pooled = np.zeros((1, 2, 4), np.float32), np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="one row per prompt"):
        fp.save_prompt_embeddings(tmp_path / "a.safetensors", ["x", "y"], t5, pooled)
    with pytest.raises(ValueError, match="NaN"):
        fp.save_prompt_embeddings(tmp_path / "a.safetensors", ["x"], t5 * np.nan, pooled)
    with pytest.raises(ValueError, match="twice"):
        fp.save_prompt_embeddings(tmp_path / "a.safetensors", ["x", "x"], t5, pooled)
    path = fp.save_prompt_embeddings(tmp_path / "a.safetensors", ["x"], t5, pooled)
    emb = fp.load_prompt_embeddings(path)
    with pytest.raises(ValueError, match="not in the file"):
        emb.conditioning("y", 32, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        emb.conditioning("x", 40, 32)
    other = tmp_path / "other.safetensors"
    flux.checkpoint.write_tensors({"t5": t5}, other)
    with pytest.raises(ValueError, match="not a prompt-embeddings file"):
        fp.load_prompt_embeddings(other)
    with pytest.raises(ValueError, match="`pipeline`"):
        fp.encode_prompts(["x"])
    with pytest.raises(FileNotFoundError, match="not a FLUX pipeline folder"):
        fp.encode_prompts(["x"], pipeline=str(tmp_path))
    assert json.loads(json.dumps(list(emb.prompts))) == ["x"]


def test_flux_prompts_command_writes_the_file(pipeline_root, tmp_path):
    from psijax.cli import main

    root, oracle = pipeline_root
    argv = ["flux-prompts", *PROMPTS[:2], "--pipeline", str(root), "--max-length", "16"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    emb = fp.load_prompt_embeddings(tmp_path / "prompts.safetensors")
    with torch.no_grad():
        t5, pooled, _ = oracle.encode_prompt(PROMPTS[:2], None, max_sequence_length=16)
    np.testing.assert_allclose(emb.t5, t5.numpy(), atol=1e-5, rtol=1e-5)
    assert emb.prompts == tuple(PROMPTS[:2])
    with pytest.raises(SystemExit, match="--pipeline, or --t5 and --clip"):
        main(["flux-prompts", "x", "--out", str(tmp_path)])
