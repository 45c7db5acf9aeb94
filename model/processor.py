"""Prompts and the token layout of one model input, exactly as the reference processor writes them.

Layout: ``[BOS] [Image 1] <image tokens> [Image 2] <image tokens> … User: {prompt} Assistant:``
("Image k" only when there are several images; BOS is EOS for Qwen). Text between image specials is
tokenized segment by segment, which is what the reference's single ``tokenizer(...)`` call does too
because special tokens split the text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .image_processing import ImageProcessingConfig, ImageTokenIds, preprocess_images
from .tokenizer import MolmoActTokenizer

# The literal prompts (reference: test_molmoact.py, SteerSimplerEnv/molmoact_model_test.py,
# olmo/data/custom_lerobot_dataset.py). "strictly follow this reasoning prompt".
PROMPTS: dict[str, str] = {
    "reason_single": (
        "The task is {instruction}. What is the action that the robot should take. "
        "To figure out the action that the robot should take to {instruction}, let's think through it step by "
        "step. First, what is the depth map for this image? Second, what is the trajectory of the end effector? "
        "Based on the depth map of the image and the trajectory of the end effector, what is the action that the "
        "robot should take?"),
    "reason_multi": (
        "The task is {instruction}. What is the action that the robot should take. "
        "To figure out the action that the robot should take to {instruction}, let's think through it step by "
        "step. First, what is the depth map for the first image? Second, what is the trajectory of the end "
        "effector in the first image? Based on the depth map of the first image and the trajectory of the end "
        "effector in the first image, along with other images from different camera views as additional "
        "information, what is the action that the robot should take?"),
    "steer_single": (
        "The task is {instruction}. Notice that the trajectory of the end effector is annotated on the image. "
        "Based on the trajectory annotated on the image, what is the action that the robot should take?"),
    "steer_multi": (
        "The task is {instruction}. Notice that the trajectory of the end effector is annotated on the first "
        "image. Based on the trajectory annotated on the image, along with other images from different camera "
        "views as additional information, what is the action that the robot should take?"),
}


def _check_instruction(instruction: str) -> str:
    instruction = instruction.strip()
    if not instruction:
        raise ValueError("the instruction is empty")
    return instruction


def reasoning_prompt(instruction: str, num_images: int) -> str:
    key = "reason_single" if num_images == 1 else "reason_multi"
    return PROMPTS[key].format(instruction=_check_instruction(instruction))


def steering_prompt(instruction: str, num_images: int) -> str:
    key = "steer_single" if num_images == 1 else "steer_multi"
    return PROMPTS[key].format(instruction=_check_instruction(instruction))


def chat_text(prompt: str) -> str:
    """The ``demo_role`` chat template with the generation prompt: role name + ": ", joined by a space."""
    return "User: " + prompt + " Assistant:"


@dataclass
class ModelInputs:
    input_ids: torch.Tensor          # [1, S] int64
    crops: torch.Tensor              # [N_views, 729, 588] float32
    pooled_patches_idx: torch.Tensor  # [T, 4] int64
    num_image_tokens: list[int]      # per image
    text: str                        # the chat text after the image tokens

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


class MolmoActProcessor:
    def __init__(self, tokenizer: MolmoActTokenizer, image_config: ImageProcessingConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_config = image_config or ImageProcessingConfig()
        ids = tokenizer.ids
        self.image_token_ids = ImageTokenIds(start=ids.im_start, end=ids.im_end, patch=ids.im_patch, col=ids.im_col)

    @classmethod
    def from_dir(cls, path: str | Path, tokenizer: MolmoActTokenizer | None = None) -> "MolmoActProcessor":
        """Reads ``preprocessor_config.json`` when the checkpoint has one; the reference defaults otherwise."""
        path = Path(path)
        tokenizer = tokenizer or MolmoActTokenizer.from_dir(path)
        pre = path / "preprocessor_config.json"
        config = None
        if pre.is_file():
            try:
                config = ImageProcessingConfig.from_preprocessor_config(json.loads(pre.read_text()))
            except json.JSONDecodeError as e:
                raise ValueError(f"{pre}: not valid JSON ({e})") from None
        return cls(tokenizer, config)

    def __call__(self, images: Sequence[np.ndarray], prompt: str) -> ModelInputs:
        if len(images) == 0:
            raise ValueError("at least one image is required")
        pre = preprocess_images(list(images), self.image_config, self.image_token_ids)
        ids: list[int] = [self.tokenizer.bos_id]
        multi = len(images) > 1
        for k, image_ids in enumerate(pre.image_token_ids):
            if multi:
                ids += self.tokenizer.encode(f"Image {k + 1}")
            ids += [int(i) for i in image_ids]
        text = chat_text(prompt)
        ids += self.tokenizer.encode(text)
        return ModelInputs(
            input_ids=torch.tensor([ids], dtype=torch.long),
            crops=torch.from_numpy(np.ascontiguousarray(pre.crops)),
            pooled_patches_idx=torch.from_numpy(np.asarray(pre.pooled_patches_idx, dtype=np.int64)),
            num_image_tokens=[len(t) for t in pre.image_token_ids],
            text=text,
        )
