#!/usr/bin/env python3
"""Check `nvfp4 run` against PyTorch on random NVFP4 groups written with safetensors.

What it does:
  1. Builds a group of random NVFP4 problems the way GPU MODE's `nvfp4_group_gemm`
     generator does (FP4 E2M1 codes masked with 0b1011, i.e. values {0, +-0.5, +-1, +-1.5};
     E4M3 scales 1.0 or 2.0), as PyTorch tensors in the GPU MODE format:
       g{i}.a    torch.uint8          [M, K/2]   two E2M1 codes per byte, element 2j in the
                                                 LOW nibble of byte j (float4_e2m1fn_x2)
       g{i}.b    torch.uint8          [N, K/2]
       g{i}.sfa  torch.float8_e4m3fn  [M, K/16]  plain row-major scales
       g{i}.sfb  torch.float8_e4m3fn  [N, K/16]
       g{i}.alpha torch.float32       []         output factor
  2. Saves them with `safetensors.torch.save_file`, runs
     `BINARY run --input in.safetensors --output out.safetensors` (plus `--cpu` / `--portable`
     if given), and loads the output with `safetensors.torch.load_file`.
  3. Checks the output holds exactly g{i}.c, float16, [M, N], and compares each with
     PyTorch's own dequantize-and-matmul in float64:
       c = alpha * (dequant(a) * sfa) @ (dequant(b) * sfb)^T
     using an E2M1 decoding table written here (independently of the Rust code) and
     torch's float8_e4m3fn dtype for the scales.
  4. Prints the worst absolute and relative error and the relative Frobenius error, and
     exits 1 if any element is outside DESIGN.md's tolerance for these inputs (GPU MODE's:
     |got - want| <= atol + rtol * |want| with rtol = atol = 1e-3), 2 on a usage or setup
     error (e.g. the binary failed), 0 otherwise.

Usage:
  python3 scripts/torch_roundtrip.py [BINARY] [--shapes 'M,N,K;M,N,K;...'] [--seed S]
                                     [--cpu] [--portable] [--keep DIR]
BINARY defaults to .device-bin/nvfp4 (where scripts/stage-device.sh puts the binary).

Needs: python3, torch (with float8_e4m3fn, i.e. >= 2.1) and safetensors (pip install torch
safetensors). Runs on the CPU; the GPU is only used by `nvfp4 run` itself.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile

RTOL = 1e-3
ATOL = 1e-3

# E2M1 (sign | e1 e0 | m): codes 0..7 are +{0, 0.5, 1, 1.5, 2, 3, 4, 6}, 8..15 the negatives.
E2M1_VALUES = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
]

# Default group: ragged token counts including an expert with none, N and K that are not
# multiples of a tile, alphas that keep the results exact.
DEFAULT_SHAPES = "40,256,512;0,256,512;96,384,256;17,136,768;128,128,64"


def parse_shapes(spec):
    shapes = []
    for part in spec.replace(" ", "").split(";"):
        if not part:
            continue
        fields = part.split(",")
        if len(fields) != 3:
            raise ValueError(f"shape `{part}` is not M,N,K")
        m, n, k = (int(x) for x in fields)
        if m < 0 or n < 0 or k <= 0 or k % 16 != 0:
            raise ValueError(f"shape `{part}`: need M, N >= 0 and K a positive multiple of 16")
        shapes.append((m, n, k))
    if not shapes:
        raise ValueError("no shapes given")
    return shapes


def random_operand(torch, gen, rows, k):
    """GPU MODE-like operand: (packed uint8 [rows, k/2], float8_e4m3fn scales [rows, k/16])."""
    codes = torch.randint(0, 16, (rows, k), generator=gen, dtype=torch.uint8) & 0b1011
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
    choice = torch.randint(0, 2, (rows, k // 16), generator=gen)
    scales = torch.where(choice == 0, 1.0, 2.0).to(torch.float32).to(torch.float8_e4m3fn)
    return packed, scales.contiguous()


def dequantize(torch, packed, scales):
    """float64 [rows, k] values of packed E2M1 pairs times their E4M3 block scales."""
    rows, half_k = packed.shape
    table = torch.tensor(E2M1_VALUES, dtype=torch.float64)
    lo = (packed & 0x0F).to(torch.int64)  # element 2j
    hi = (packed >> 4).to(torch.int64)  # element 2j + 1
    codes = torch.stack([lo, hi], dim=-1).reshape(rows, 2 * half_k)
    values = table[codes]
    s = scales.to(torch.float32).to(torch.float64).repeat_interleave(16, dim=1)
    return values * s


# safetensors dtype names of the torch dtypes this script writes and reads.
def _dtype_names(torch):
    return {
        torch.uint8: "U8",
        torch.float8_e4m3fn: "F8_E4M3",
        torch.float32: "F32",
        torch.float16: "F16",
    }


def minimal_save(torch, tensors, path):
    """Writes `tensors` in the safetensors format: u64 little-endian header length, JSON
    header {name: {dtype, shape, data_offsets}}, then the tensors' bytes back to back."""
    import json
    import struct
    names = _dtype_names(torch)
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in blobs:
            f.write(data)


def minimal_load(torch, path):
    """Reads a safetensors file written by anyone, for the dtypes of `_dtype_names`."""
    import json
    import struct
    by_name = {v: k for k, v in _dtype_names(torch).items()}
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = by_name[info["dtype"]]
        data = bytearray(body[start:end])
        flat = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        out[name] = flat.view(dtype).reshape(info["shape"])
    return out


def main():
    parser = argparse.ArgumentParser(
        description="Check `nvfp4 run` against PyTorch (see the module docstring)."
    )
    parser.add_argument("binary", nargs="?", default=".device-bin/nvfp4",
                        help="the nvfp4 binary (default: .device-bin/nvfp4)")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES,
                        help=f"problems as 'M,N,K;M,N,K;...' (default: {DEFAULT_SHAPES})")
    parser.add_argument("--seed", type=int, default=0x5EED)
    parser.add_argument("--cpu", action="store_true", help="pass --cpu to nvfp4 run")
    parser.add_argument("--portable", action="store_true", help="pass --portable to nvfp4 run")
    parser.add_argument("--keep", metavar="DIR",
                        help="write the input and output files to DIR and keep them")
    args = parser.parse_args()

    try:
        shapes = parse_shapes(args.shapes)
    except ValueError as e:
        print(f"error: --shapes: {e}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.binary):
        print(f"error: no nvfp4 binary at {args.binary}", file=sys.stderr)
        return 2

    try:
        import torch
    except ImportError as e:
        print(f"error: {e} (pip install torch safetensors)", file=sys.stderr)
        return 2
    try:
        from safetensors.torch import load_file, save_file
    except ImportError:
        # Machines without the safetensors package (e.g. offline GPU hosts): the format is
        # small enough to write and read here (see minimal_save / minimal_load).
        print("note: the safetensors package is missing; using this script's own reader and "
              "writer of the format", file=sys.stderr)
        save_file = lambda tensors, path: minimal_save(torch, tensors, path)  # noqa: E731
        load_file = lambda path: minimal_load(torch, path)  # noqa: E731
    if not hasattr(torch, "float8_e4m3fn"):
        print("error: this torch has no float8_e4m3fn (need torch >= 2.1)", file=sys.stderr)
        return 2

    gen = torch.Generator().manual_seed(args.seed)
    alphas = [1.0, 0.5, 0.25, 2.0]
    tensors = {}
    problems = []
    for i, (m, n, k) in enumerate(shapes):
        a, sfa = random_operand(torch, gen, m, k)
        b, sfb = random_operand(torch, gen, n, k)
        alpha = alphas[i % len(alphas)]
        tensors[f"g{i}.a"] = a
        tensors[f"g{i}.b"] = b
        tensors[f"g{i}.sfa"] = sfa
        tensors[f"g{i}.sfb"] = sfb
        tensors[f"g{i}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
        problems.append((m, n, k, a, sfa, b, sfb, alpha))

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        inp = os.path.join(work, "in.safetensors")
        out = os.path.join(work, "out.safetensors")
        if os.path.exists(out):
            os.remove(out)
        save_file(tensors, inp)
        cmd = [args.binary, "run", "--input", inp, "--output", out]
        if args.cpu:
            cmd.append("--cpu")
        if args.portable:
            cmd.append("--portable")
        print("+ " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            print(f"error: nvfp4 run exited with status {proc.returncode}", file=sys.stderr)
            return 2
        got = load_file(out)

    want_names = {f"g{i}.c" for i in range(len(problems))}
    if set(got) != want_names:
        print(f"FAIL: output tensors {sorted(got)}, expected {sorted(want_names)}")
        return 1

    worst_abs = 0.0
    worst_rel = 0.0
    err_sq = 0.0
    ref_sq = 0.0
    bad = 0
    failed = False
    for i, (m, n, k, a, sfa, b, sfb, alpha) in enumerate(problems):
        c = got[f"g{i}.c"]
        if c.dtype != torch.float16 or tuple(c.shape) != (m, n):
            print(f"FAIL: g{i}.c is {c.dtype} {tuple(c.shape)}, expected float16 ({m}, {n})")
            failed = True
            continue
        want = alpha * (dequantize(torch, a, sfa) @ dequantize(torch, b, sfb).T)
        c64 = c.to(torch.float64)
        if m * n == 0:
            print(f"g{i}: M={m} N={n} K={k}: empty, ok")
            continue
        diff = (c64 - want).abs()
        nonzero = want != 0
        rel = diff[nonzero] / want[nonzero].abs()
        g_abs = diff.max().item()
        g_rel = rel.max().item() if rel.numel() else 0.0
        g_bad = int((diff > ATOL + RTOL * want.abs()).sum().item())
        if not torch.isfinite(c64).all():
            g_bad = max(g_bad, 1)
        worst_abs = max(worst_abs, g_abs)
        worst_rel = max(worst_rel, g_rel)
        err_sq += (diff * diff).sum().item()
        ref_sq += (want * want).sum().item()
        bad += g_bad
        print(f"g{i}: M={m} N={n} K={k} alpha={alpha}: max abs {g_abs:.3e}, "
              f"max rel {g_rel:.3e}, {g_bad} outside tolerance")

    rel_frob = math.sqrt(err_sq / ref_sq) if ref_sq > 0 else 0.0
    print(f"worst absolute error {worst_abs:.3e}, worst relative error {worst_rel:.3e}, "
          f"relative Frobenius error {rel_frob:.3e} (tolerance rtol = atol = {RTOL:g})")
    if failed or bad:
        print(f"FAIL: {bad} elements outside |got - want| <= {ATOL:g} + {RTOL:g} * |want|")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
