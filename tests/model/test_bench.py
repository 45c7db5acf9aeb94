"""The benchmark command runs and reports the DESIGN.md keys (figures are checked by reading them, not here)."""
import json

import pytest

from model import bench

KEYS = {"device", "shape", "prefill_ms", "decode_ms_per_token", "reason_ms", "steer_visual_ms", "steer_text_ms"}


def test_bench_json_keys_tiny(capsys):
    assert bench.main(["--repeats", "1", "--decode-tokens", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert KEYS <= set(res) and res["shape"] == "tiny" and res["device"] == "cpu"
    assert all(res[k] > 0 for k in KEYS - {"device", "shape"})
    assert res["decode_steps_reason"] < res["answer_tokens"]


@pytest.mark.slow
def test_gpu_mode_code_path_runs_on_cpu_at_a_small_shape():
    """--shape 7b-mini: random weights, the real Qwen id layout and 7B-D structure, on the CPU."""
    res = bench.run(device="cpu", shape="7b-mini", repeats=1, decode_tokens=2)
    assert KEYS <= set(res) and res["bandwidth_floor_ms_per_token"] > 0
    assert res["prompt_tokens"] == 522
