"""scripts/mmcv_subset.py trims mmcv's sources to an op subset, on CPU as on
CUDA: the files of the ops left out go, pybind.cpp binds their functions to a
one-line error, and cudabind.cpp is pruned so that nothing is left undefined.
The tree here copies the shapes of mmcv 2.1.0's sources that broke a first
version of the pruning: a registration written without its semicolon, a '/*'
inside a line comment, and a macro line ahead of a definition. The installed
build is checked too: an op outside its subset fails on one line, and the
wheel cache keys a build by its op set."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("mmcv_subset", ROOT / "scripts" / "mmcv_subset.py")
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

PYBIND = """\
#include <torch/extension.h>
void nms_impl(Tensor boxes, Tensor out);
void ball_query_impl(int b, Tensor idx);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nms", &nms_impl, "nms (CPU/CUDA) ", py::arg("boxes"),
        py::arg("out"));
  m.def("ball_query_forward",
        &ball_query_impl, "ball_query_forward", py::arg("b"), py::arg("idx"));
}
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
    # the nms entry point also calls a kernel of another op directly, as mmcv's nms_rotated.cpp does
    (root / "mmcv/ops/csrc/pytorch/nms.cpp").write_text(
        "void nms_impl(Tensor boxes, Tensor out) {\n  DISPATCH_DEVICE_IMPL(nms_impl, boxes, out);\n}\n"
        "Tensor nms_rotated_cuda(Tensor dets);\nTensor nms_quick(Tensor d) { return nms_rotated_cuda(d); }\n")
    (root / "mmcv/ops/csrc/pytorch/cpu/nms.cpp").write_text(
        "Tensor nms_cpu(Tensor boxes, Tensor out) { return boxes; }\nREGISTER_DEVICE_IMPL(nms_impl, CPU, nms_cpu);\n")
    (root / "mmcv/ops/csrc/pytorch/cpu/ball_query.cpp").write_text(
        "void ball_query_cpu(int b, Tensor idx) {}\nREGISTER_DEVICE_IMPL(ball_query_impl, CPU, ball_query_cpu);\n")
    (root / "mmcv/ops/csrc/pytorch/pybind.cpp").write_text(PYBIND)
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
    assert subset.trim(root, subset.known_ops(root)) == []
    assert (root / "mmcv/ops/csrc/pytorch/cuda/cudabind.cpp").read_text() == CUDABIND
    assert (root / "mmcv/ops/csrc/pytorch/pybind.cpp").read_text() == PYBIND


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
    assert "no mmcv op named nmss" in str(e.value) and "ball_query, bias_act, nms" in str(e.value)
    assert (root / "mmcv/ops/csrc/pytorch/cuda/ball_query_cuda.cu").exists(), "nothing deleted on bad input"


def test_a_folder_that_is_not_mmcv_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not an mmcv source tree"):
        subset.trim(tmp_path, ["nms"])


def test_ops_left_out_lose_their_entry_points_and_cpu_kernels_and_bind_to_one_line(tmp_path):
    root = make_tree(tmp_path)
    subset.trim(root, ["nms"])
    base = root / "mmcv/ops/csrc/pytorch"
    assert sorted(p.name for p in base.glob("*.cpp")) == ["nms.cpp", "pybind.cpp"]
    assert sorted(p.name for p in (base / "cpu").iterdir()) == ["nms.cpp"]
    text = (base / "pybind.cpp").read_text()
    assert 'm.def("nms", &nms_impl, "nms (CPU/CUDA) ", py::arg("boxes"),\n        py::arg("out"));' in text
    stub = next(line for line in text.splitlines() if '"ball_query_forward"' in line)
    assert "&ball_query_impl" not in text and "throw std::runtime_error(" in stub
    assert "ball_query_forward: implementation not found" in stub and "scripts/bootstrap.sh --all-ops" in stub


def test_the_real_mmcv_sources_trim_to_the_detection_ops(tmp_path):
    """mmcv 2.1.0's own sdist, as scripts/bootstrap.sh kept it in the wheel cache."""
    sdist = Path(os.environ.get("MUSU_WHEEL_CACHE", Path.home() / ".cache" / "musu-wheels")) / "sdist" / \
        "mmcv-2.1.0.tar.gz"
    if not sdist.is_file():
        pytest.skip(f"{sdist} is not there: scripts/bootstrap.sh keeps it when it builds the op subset")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    src = tmp_path / "mmcv-2.1.0"
    subset.trim(src, list(subset.DETECTION_OPS))
    base = src / "mmcv/ops/csrc/pytorch"
    left = sorted(str(p.relative_to(base)) for p in subset.sources_of(src))
    assert left == ["cpu/deform_conv.cpp", "cpu/modulated_deform_conv.cpp", "cpu/nms.cpp",
                    "cuda/deform_conv_cuda.cu", "cuda/focal_loss_cuda.cu", "cuda/modulated_deform_conv_cuda.cu",
                    "cuda/nms_cuda.cu", "deform_conv.cpp", "focal_loss.cpp", "info.cpp",
                    "modulated_deform_conv.cpp", "nms.cpp"]
    text = (base / "pybind.cpp").read_text()
    assert 'm.def("nms", &nms,' in text and '"roi_align_forward", [](py::args' in text


def _installed_key() -> str:
    key = ROOT / ".venv" / ".mmcv-build"
    if not key.is_file():
        pytest.skip("mmcv was not installed by scripts/bootstrap.sh")
    return key.read_text().strip()


def test_an_op_outside_the_installed_subset_fails_on_one_line_naming_all_ops():
    import torch
    from mmcv.ops import roi_align
    feats, rois = torch.rand(1, 2, 8, 8), torch.tensor([[0.0, 1.0, 1.0, 6.0, 6.0]])
    if "-allops-" in _installed_key():
        assert roi_align(feats, rois, (2, 2)).shape == (1, 2, 2, 2)
        return
    with pytest.raises(RuntimeError) as e:
        roi_align(feats, rois, (2, 2))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("roi_align_forward: implementation not found"), msg
    assert "scripts/bootstrap.sh --all-ops" in msg
    from mmcv.ops import batched_nms  # a kept op runs
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]])
    assert batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long),
                       dict(type="nms", iou_threshold=0.5))[1].tolist() == [0]


def test_the_wheel_cache_keys_a_build_by_its_op_set(tmp_path):
    _installed_key()
    env = dict(os.environ, MUSU_WHEEL_CACHE=str(tmp_path))

    def key(*args, **extra):
        out = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh"), "--print-key", *args],
                             capture_output=True, text=True, env={**env, **extra}, timeout=300)
        assert out.returncode == 0, out.stderr
        name, folder = out.stdout.split()
        assert Path(folder) == tmp_path / name
        return name

    subset_key, all_key, nms_key = key(), key("--all-ops"), key(MUSU_MMCV_OPS="nms")
    assert "-ops-deform_conv-focal_loss-modulated_deform_conv-nms-" in subset_key
    assert "-allops-" in all_key and "-ops-nms-" in nms_key
    assert len({subset_key, all_key, nms_key}) == 3
    assert subset_key.replace("-ops-deform_conv-focal_loss-modulated_deform_conv-nms-", "-allops-") == all_key
    both = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh"), "--all-ops"], capture_output=True,
                          text=True, env={**env, "MUSU_MMCV_OPS": "nms"}, timeout=60)
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "--all-ops" in both.stderr
