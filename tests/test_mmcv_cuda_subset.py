"""scripts/mmcv_cuda_subset.py prunes mmcv's cudabind.cpp so that the CUDA
kernels left out leave nothing undefined. The tree here copies the shapes of
mmcv 2.1.0's sources that broke a first version of the pruning: a
registration written without its semicolon, a '/*' inside a line comment, and
a macro line ahead of a definition."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("mmcv_cuda_subset", ROOT / "scripts" / "mmcv_cuda_subset.py")
subset = importlib.util.module_from_spec(spec)
spec.loader.exec_module(subset)

CUDABIND = """\
#include "pytorch_cpp_helper.hpp"

void NMSCUDAKernelLauncher(Tensor boxes, Tensor out);

void nms_cuda(Tensor boxes, Tensor out) {
  NMSCUDAKernelLauncher(boxes, out);
};

void nms_impl(Tensor boxes, Tensor out);
REGISTER_DEVICE_IMPL(nms_impl, CUDA, nms_cuda)

void BallQueryCUDAKernelLauncher(int b, Tensor idx);

void ball_query_cuda(int b, Tensor idx) {
  // calls the launcher below
  BallQueryCUDAKernelLauncher(b, idx);
}

void ball_query_impl(int b, Tensor idx);
REGISTER_DEVICE_IMPL(ball_query_impl, CUDA,
                     ball_query_cuda);

Tensor MaxpoolCUDAKernelLauncher(Tensor f);
Tensor maxpool_cuda(Tensor f) { return MaxpoolCUDAKernelLauncher(f); }
Tensor maxpool_impl(Tensor f);
REGISTER_DEVICE_IMPL(maxpool_impl, CUDA, maxpool_cuda);
"""

NMS_CU = """\
// Modified from https://example.org/nms/* an url with a star
#include "nms_cuda_kernel.cuh"
#define DIVUP(m, n) ((m) / (n) + ((m) % (n) > 0))

void NMSCUDAKernelLauncher(Tensor boxes,
                           Tensor out) {
  int x = DIVUP(3, 2);
}
"""


def make_tree(root: Path) -> Path:
    cuda = root / "mmcv/ops/csrc/pytorch/cuda"
    cuda.mkdir(parents=True)
    (root / "mmcv/ops/csrc/pytorch/cpu").mkdir()
    (cuda / "cudabind.cpp").write_text(CUDABIND)
    (cuda / "nms_cuda.cu").write_text(NMS_CU)
    (cuda / "ball_query_cuda.cu").write_text(
        "void BallQueryCUDAKernelLauncher(int b, Tensor idx) {\n  launch();\n}\n")
    (cuda / "sparse_maxpool.cu").write_text(
        "struct InternalType { float x; };\nTensor MaxpoolCUDAKernelLauncher(Tensor f) { return f; }\n")
    (root / "mmcv/ops/csrc/pytorch/nms.cpp").write_text(
        "void nms_impl(Tensor boxes, Tensor out) {\n  DISPATCH_DEVICE_IMPL(nms_impl, boxes, out);\n}\n")
    (root / "mmcv/ops/csrc/pytorch/ball_query.cpp").write_text(
        "void ball_query_impl(int b, Tensor idx) {\n  DISPATCH_DEVICE_IMPL(ball_query_impl, b, idx);\n}\n")
    (root / "mmcv/ops/csrc/pytorch/spconv_ops.cpp").write_text(
        "Tensor maxpool_impl(Tensor f) { return DISPATCH_DEVICE_IMPL(maxpool_impl, f); }\n")
    # called directly (not through the registry) from an entry point, as mmcv's nms_rotated.cpp does
    (cuda / "nms_rotated_cuda.cu").write_text(
        "struct InternalType { float x; };\nTensor nms_rotated_cuda(Tensor dets) {\n  return dets;\n}\n")
    (root / "mmcv/ops/csrc/pytorch/nms_rotated.cpp").write_text(
        "Tensor nms_rotated_cuda(Tensor dets);\nTensor nms_rotated(Tensor d) { return nms_rotated_cuda(d); }\n")
    # a helper type both this file and sparse_maxpool.cu define for themselves: no link between them
    (cuda / "bias_act_cuda.cu").write_text(
        "struct InternalType { float x; };\nvoid BiasActLauncher(Tensor x) {\n  x.clamp(0);\n}\n")
    return root


def test_keeping_every_op_leaves_cudabind_as_it_was(tmp_path):
    root = make_tree(tmp_path)
    assert subset.trim(root, ["nms", "ball_query", "sparse_maxpool", "nms_rotated", "bias_act"]) == []
    assert (root / "mmcv/ops/csrc/pytorch/cuda/cudabind.cpp").read_text() == CUDABIND


def test_ops_left_out_lose_their_kernels_and_registrations(tmp_path):
    root = make_tree(tmp_path)
    dropped = subset.trim(root, ["nms"])
    cuda = root / "mmcv/ops/csrc/pytorch/cuda"
    assert sorted(p.name for p in cuda.iterdir()) == ["cudabind.cpp", "nms_cuda.cu", "nms_rotated_cuda.cu"]
    text = (cuda / "cudabind.cpp").read_text()
    assert dropped == ["ball_query_cuda", "maxpool_cuda"]
    assert "REGISTER_DEVICE_IMPL(nms_impl, CUDA, nms_cuda)" in text
    assert "ball_query_cuda);" not in text and "maxpool_cuda);" not in text
    assert "void nms_cuda(Tensor boxes, Tensor out) {" in text


def test_chunks_put_the_file_back_together_exactly():
    assert "".join(subset.top_level_chunks(CUDABIND)) == CUDABIND


def test_an_unknown_op_is_one_line_naming_the_known_ones(tmp_path):
    root = make_tree(tmp_path)
    with pytest.raises(SystemExit) as e:
        subset.trim(root, ["nmss"])
    assert "no CUDA source for nmss" in str(e.value) and "ball_query, bias_act, nms" in str(e.value)
    assert (root / "mmcv/ops/csrc/pytorch/cuda/ball_query_cuda.cu").exists(), "nothing deleted on bad input"


def test_a_folder_that_is_not_mmcv_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not an mmcv source tree"):
        subset.trim(tmp_path, ["nms"])
