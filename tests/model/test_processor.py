import numpy as np
import pytest

from model.processor import PROMPTS, chat_text, reasoning_prompt, steering_prompt
from model.tokenizer import MolmoActTokenizer, build_tiny_tokenizer


def test_prompts_are_the_reference_literals():
    assert reasoning_prompt("close the box", 1) == (
        "The task is close the box. What is the action that the robot should take. To figure out the action that "
        "the robot should take to close the box, let's think through it step by step. First, what is the depth "
        "map for this image? Second, what is the trajectory of the end effector? Based on the depth map of the "
        "image and the trajectory of the end effector, what is the action that the robot should take?")
    assert steering_prompt("close the box", 1) == (
        "The task is close the box. Notice that the trajectory of the end effector is annotated on the image. "
        "Based on the trajectory annotated on the image, what is the action that the robot should take?")
    assert "along with other images from different camera views" in reasoning_prompt("x", 2)
    assert "annotated on the first image" in steering_prompt("x", 2)
    assert chat_text("hi") == "User: hi Assistant:"
    with pytest.raises(ValueError, match="empty"):
        reasoning_prompt("   ", 1)
    assert set(PROMPTS) == {"reason_single", "reason_multi", "steer_single", "steer_multi"}


def test_single_image_token_layout(tiny, rgb):
    tok = tiny.tokenizer
    inp = tiny.processor([rgb], reasoning_prompt("pick up the red cube", 1))
    ids = inp.input_ids[0].tolist()
    assert ids[0] == tok.bos_id == tok.ids.eos                      # BOS is EOS for Qwen
    assert inp.num_image_tokens == [424]
    assert ids[1] == tok.ids.im_start and ids[424] == tok.ids.im_end
    assert ids.count(tok.ids.im_patch) == 392 and ids.count(tok.ids.im_col) == 28
    assert ids[425:] == tok.encode("User: " + reasoning_prompt("pick up the red cube", 1) + " Assistant:")
    assert inp.pooled_patches_idx.shape == (392, 4)
    assert inp.crops.shape == (2, 729, 588)


def test_two_cameras_get_image_k_labels(tiny, rgb):
    tok = tiny.tokenizer
    wrist = rgb[::-1].copy()
    inp = tiny.processor([rgb, wrist], reasoning_prompt("pick up the red cube", 2))
    ids = inp.input_ids[0].tolist()
    label1, label2 = tok.encode("Image 1"), tok.encode("Image 2")
    assert ids[1:1 + len(label1)] == label1
    start2 = 1 + len(label1) + 424
    assert ids[start2:start2 + len(label2)] == label2
    assert inp.num_image_tokens == [424, 424]
    assert ids.count(tok.ids.im_patch) == inp.pooled_patches_idx.shape[0] == 784


def test_640x480_uses_the_2x2_tiling(tiny):
    img = np.zeros((480, 640, 3), np.uint8)
    inp = tiny.processor([img], "x")
    assert inp.num_image_tokens == [766] and inp.crops.shape[0] == 5


def test_tiny_tokenizer_follows_the_reference_id_layout():
    tok = MolmoActTokenizer(build_tiny_tokenizer(512, 768))
    ids = tok.ids
    assert (ids.eos, ids.depth_start, ids.depth_end) == (512, 515, 516)
    assert ids.depth_codes[0] == 517 and ids.depth_codes[127] == 644
    assert (ids.im_start, ids.im_end, ids.im_patch, ids.im_col) == (768, 769, 770, 771)
    assert tok.action_base_id == 512                               # action bins: ids 256..511
    # Digits are single tokens (Qwen2 pre-tokenizer), which the trace grammar relies on.
    assert [tok.id_to_token(i) for i in tok.encode("[[120,34]]")][:6] == ["[", "[", "1", "2", "0", ","]
    # Depth tokens are added (not special) tokens: they survive skip_special_tokens decoding.
    assert tok.decode(tok.encode("is <DEPTH_START><DEPTH_7><DEPTH_END>.")) == "is <DEPTH_START><DEPTH_7><DEPTH_END>."
