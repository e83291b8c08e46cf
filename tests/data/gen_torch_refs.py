#!/usr/bin/python3
"""Generates the PyTorch reference files tests/data/torch_ref_*.json.

Run once with Debian's interpreter, which has python3-torch (1.13, CPU):

    /usr/bin/python3 tests/data/gen_torch_refs.py

The files are committed; the C++ test tests/ops/test_torch_ref.cpp reads them and CI needs
no torch. Output is deterministic (fixed seeds), so a rerun only changes the files when the
cases or torch change.

File layout (one file per op family):
  {"torch_version": str, "cases": [case...]}
  case = {"name": str, "op": str, "attrs": {...},
          "inputs":  [{"shape": [...], "dtype": str, "data": [flat values]}...],
          "outputs": [same layout],
          "tol": {"float32": [rtol, atol], "float64": [rtol, atol]}}
Float inputs hold float32-representable values (drawn in float32). The outputs are torch's
results computed on the same inputs converted to float64, written as float64 with full
precision (repr round-trips), and "dtype" is the dtype torch gives for the inputs as stored.
The C++ test runs each case twice: with the inputs as stored (float results checked with the
float32 tolerance) and with float inputs widened to float64 (float64 tolerance).
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.int32: "int32",
               torch.int64: "int64", torch.bool: "bool"}
# [rtol, atol] per dtype of the run; ops that accumulate many terms get a larger float32 atol
# (a float32 sum of n terms of size ~1 is off by up to ~n * 6e-8 when the sum is near 0).
DEFAULT_TOL = {"float32": [2e-5, 2e-6], "float64": [1e-11, 1e-13]}
ACCUM_TOL = {"float32": [2e-5, 2e-5], "float64": [1e-11, 1e-12]}
ACCUM_OPS = {"sum", "mean", "var", "logsumexp", "layer_norm", "matmul", "conv2d", "avg_pool2d",
             "adaptive_avg_pool2d", "cumsum"}


def randn(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float32) * scale).to(torch.float32)


def encode(t):
    t = t.detach().contiguous()
    name = DTYPE_NAMES[t.dtype]
    if t.is_floating_point():
        data = [float(v) for v in t.to(torch.float64).flatten().tolist()]
    elif t.dtype == torch.bool:
        data = [bool(v) for v in t.flatten().tolist()]
    else:
        data = [int(v) for v in t.flatten().tolist()]
    return {"shape": list(t.shape), "dtype": name, "data": data}


def widen(t):
    return t.to(torch.float64) if t.is_floating_point() else t


class Family:
    def __init__(self, name):
        self.name = name
        self.cases = []

    def add(self, name, op, fn, inputs, attrs=None, tol=None):
        """fn(*inputs) -> tensor or tuple; evaluated on float64-widened inputs for the values
        and on the stored inputs for the result dtypes."""
        native = fn(*inputs)
        wide = fn(*[widen(t) for t in inputs])
        native = native if isinstance(native, tuple) else (native,)
        wide = wide if isinstance(wide, tuple) else (wide,)
        outputs = []
        for n, w in zip(native, wide):
            enc = encode(w)
            enc["dtype"] = DTYPE_NAMES[n.dtype]
            assert list(n.shape) == enc["shape"]
            outputs.append(enc)
        self.cases.append({"name": name, "op": op, "attrs": attrs or {},
                           "inputs": [encode(t) for t in inputs], "outputs": outputs,
                           "tol": tol or (ACCUM_TOL if op in ACCUM_OPS else DEFAULT_TOL)})

    def write(self):
        path = os.path.join(HERE, "torch_ref_%s.json" % self.name)
        doc = {"generator": "tests/data/gen_torch_refs.py", "torch_version": torch.__version__,
               "cases": self.cases}
        with open(path, "w") as f:
            json.dump(doc, f, allow_nan=False, separators=(",", ":"))
            f.write("\n")
        print("%s: %d cases, %d bytes" % (path, len(self.cases), os.path.getsize(path)))


def elementwise():
    fam = Family("elementwise")
    fam.add("add_broadcast", "add", torch.add, [randn(2, 3, 1), randn(4)])
    fam.add("add_broadcast_int64_float32", "add", torch.add,
            [torch.randint(-5, 5, (3, 1), dtype=torch.int64), randn(1, 4)])
    fam.add("div_int_to_float", "div", torch.div,
            [torch.randint(-9, 10, (2, 3), dtype=torch.int64),
             torch.tensor([3, -4, 7], dtype=torch.int64)])
    x = randn(3, 7, scale=3.0)
    fam.add("gelu_erf", "gelu", lambda t: F.gelu(t, approximate="none"), [x],
            {"approximate": "none"})
    fam.add("gelu_tanh", "gelu", lambda t: F.gelu(t, approximate="tanh"), [x],
            {"approximate": "tanh"})
    fam.add("softplus_default", "softplus", lambda t: F.softplus(t), [x],
            {"beta": 1.0, "threshold": 20.0})
    # beta * x crosses the threshold for part of x: the linear branch is exercised too.
    fam.add("softplus_beta2_threshold1", "softplus", lambda t: F.softplus(t, 2.0, 1.0), [x],
            {"beta": 2.0, "threshold": 1.0})
    return fam


def reduce():
    fam = Family("reduce")
    x = randn(3, 4, 5)
    fam.add("sum_dims_0_2", "sum", lambda t: t.sum(dim=(0, 2)), [x],
            {"dims": [0, 2], "keepdim": False})
    fam.add("sum_all", "sum", lambda t: t.sum(), [x], {"dims": [], "keepdim": False})
    fam.add("mean_dim_1_keepdim", "mean", lambda t: t.mean(dim=1, keepdim=True), [x],
            {"dims": [1], "keepdim": True})
    fam.add("mean_dim_neg1", "mean", lambda t: t.mean(dim=-1), [x],
            {"dims": [-1], "keepdim": False})
    fam.add("var_dim_1_unbiased", "var", lambda t: torch.var(t, dim=1, unbiased=True), [x],
            {"dims": [1], "correction": 1, "keepdim": False})
    fam.add("var_all_population", "var", lambda t: torch.var(t, unbiased=False), [x],
            {"dims": [], "correction": 0, "keepdim": False})
    fam.add("var_dims_0_2_keepdim", "var",
            lambda t: torch.var(t, dim=(0, 2), unbiased=True, keepdim=True), [x],
            {"dims": [0, 2], "correction": 1, "keepdim": True})
    # Large magnitudes: a naive exp overflows float32, a stable logsumexp does not.
    big = randn(4, 6, scale=60.0)
    fam.add("logsumexp_dim_1_large", "logsumexp", lambda t: torch.logsumexp(t, dim=1), [big],
            {"dims": [1], "keepdim": False})
    fam.add("logsumexp_dims_0_1_keepdim", "logsumexp",
            lambda t: torch.logsumexp(t, dim=(0, 1), keepdim=True), [x[0]],
            {"dims": [0, 1], "keepdim": True})
    return fam


def nn():
    fam = Family("nn")
    x = randn(4, 3, 8, scale=2.0)
    fam.add("softmax_dim_neg1", "softmax", lambda t: torch.softmax(t, -1), [x], {"dim": -1})
    fam.add("softmax_dim_0", "softmax", lambda t: torch.softmax(t, 0), [x], {"dim": 0})
    fam.add("softmax_large", "softmax", lambda t: torch.softmax(t, 1),
            [randn(3, 5, scale=80.0)], {"dim": 1})
    fam.add("log_softmax_dim_1", "log_softmax", lambda t: torch.log_softmax(t, 1), [x],
            {"dim": 1})
    fam.add("log_softmax_large", "log_softmax", lambda t: torch.log_softmax(t, -1),
            [randn(3, 5, scale=80.0)], {"dim": -1})
    w, b = randn(8), randn(8)
    fam.add("layer_norm_last_affine", "layer_norm",
            lambda t, ww, bb: F.layer_norm(t, [8], ww, bb, 1e-5), [x, w, b],
            {"normalized_shape": [8], "eps": 1e-5})
    fam.add("layer_norm_last2_plain", "layer_norm", lambda t: F.layer_norm(t, [3, 8], eps=1e-3),
            [x], {"normalized_shape": [3, 8], "eps": 1e-3})
    return fam


def linalg():
    fam = Family("linalg")
    fam.add("matmul_batched_broadcast", "matmul", torch.matmul, [randn(2, 1, 3, 4), randn(3, 4, 5)])
    fam.add("matmul_vector_batched", "matmul", torch.matmul, [randn(4), randn(2, 4, 3)])
    fam.add("matmul_batched_vector", "matmul", torch.matmul, [randn(2, 3, 4), randn(4)])
    fam.add("matmul_2d", "matmul", torch.matmul, [randn(5, 7), randn(7, 3)])
    return fam


def conv():
    fam = Family("conv")
    x = randn(2, 4, 7, 6)
    fam.add("conv2d_stride_padding_groups_bias", "conv2d",
            lambda t, w, b: F.conv2d(t, w, b, stride=(2, 1), padding=(1, 2), groups=2),
            [x, randn(6, 2, 3, 3), randn(6)],
            {"stride": [2, 1], "padding": [1, 2], "dilation": [1, 1], "groups": 2})
    fam.add("conv2d_dilation_nobias", "conv2d",
            lambda t, w: F.conv2d(t, w, stride=1, padding=2, dilation=2),
            [x, randn(3, 4, 3, 2)],
            {"stride": [1, 1], "padding": [2, 2], "dilation": [2, 2], "groups": 1})
    fam.add("conv2d_depthwise", "conv2d",
            lambda t, w: F.conv2d(t, w, stride=2, padding=1, groups=4),
            [x, randn(4, 1, 3, 3)],
            {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "groups": 4})
    p = randn(2, 3, 7, 6)
    fam.add("max_pool2d_ceil_mode", "max_pool2d",
            lambda t: F.max_pool2d(t, 3, stride=2, padding=1, ceil_mode=True), [p],
            {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "dilation": [1, 1],
             "ceil_mode": True})
    fam.add("max_pool2d_floor", "max_pool2d",
            lambda t: F.max_pool2d(t, (2, 3), stride=(2, 2)), [p],
            {"kernel_size": [2, 3], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1],
             "ceil_mode": False})
    fam.add("avg_pool2d_exclude_pad", "avg_pool2d",
            lambda t: F.avg_pool2d(t, 3, stride=2, padding=1, count_include_pad=False), [p],
            {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "ceil_mode": False,
             "count_include_pad": False})
    fam.add("avg_pool2d_include_pad_ceil", "avg_pool2d",
            lambda t: F.avg_pool2d(t, 3, stride=2, padding=1, ceil_mode=True,
                                   count_include_pad=True), [p],
            {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "ceil_mode": True,
             "count_include_pad": True})
    fam.add("adaptive_avg_pool2d_3x2", "adaptive_avg_pool2d",
            lambda t: F.adaptive_avg_pool2d(t, (3, 2)), [randn(2, 3, 7, 5)],
            {"output_size": [3, 2]})
    fam.add("adaptive_avg_pool2d_upsample", "adaptive_avg_pool2d",
            lambda t: F.adaptive_avg_pool2d(t, (4, 5)), [randn(1, 2, 3, 3)],
            {"output_size": [4, 5]})
    return fam


def index():
    fam = Family("index")
    fam.add("cumsum_dim_1", "cumsum", lambda t: torch.cumsum(t, 1), [randn(3, 6)], {"dim": 1})
    fam.add("cumsum_int64_dim_0", "cumsum", lambda t: torch.cumsum(t, 0),
            [torch.randint(-50, 50, (5, 2), dtype=torch.int64)], {"dim": 0})
    # Distinct values, so the order (and the indices) of topk are unambiguous.
    distinct = (torch.randperm(40).to(torch.float32) * 0.25 - 5.0).reshape(4, 10)
    fam.add("topk_largest", "topk", lambda t: torch.topk(t, 3, dim=-1), [distinct],
            {"k": 3, "dim": -1, "largest": True, "sorted": True})
    fam.add("topk_smallest_dim_0", "topk", lambda t: torch.topk(t, 2, dim=0, largest=False),
            [distinct], {"k": 2, "dim": 0, "largest": False, "sorted": True})
    src = randn(3, 5)
    fam.add("gather_dim_1", "gather", lambda t, i: torch.gather(t, 1, i),
            [src, torch.randint(0, 5, (3, 4), dtype=torch.int64)], {"dim": 1})
    fam.add("gather_dim_0", "gather", lambda t, i: torch.gather(t, 0, i),
            [src, torch.randint(0, 3, (2, 5), dtype=torch.int64)], {"dim": 0})
    fam.add("one_hot_num_classes", "one_hot", lambda i: F.one_hot(i, 6),
            [torch.tensor([0, 3, 5, 1, 3], dtype=torch.int64)], {"num_classes": 6})
    fam.add("one_hot_inferred", "one_hot", lambda i: F.one_hot(i),
            [torch.tensor([[2, 0], [1, 4]], dtype=torch.int64)], {"num_classes": -1})
    return fam


def main():
    torch.manual_seed(20240521)
    torch.set_default_dtype(torch.float32)
    total = 0
    for make in (elementwise, reduce, nn, linalg, conv, index):
        fam = make()
        fam.write()
        total += os.path.getsize(os.path.join(HERE, "torch_ref_%s.json" % fam.name))
    print("total %d bytes" % total)
    if total > 300 * 1024:
        sys.exit("reference files exceed 300 KB")


if __name__ == "__main__":
    main()
