#!/usr/bin/env bash
# Runs on the GPU machine (CUDA 13, no Rust) over what scripts/stage-device.sh staged in
# .device-bin/: the SASS check, every test executable with the GPU tests included, the CLI's
# `check` and `bench` (ours and cuBLAS in the same run). Logs go to $OUT (or ./device-out).
#   bash scripts/device-verify.sh [all|tests|check|bench|sass|sanitize|sanitize-pairs|sanitize-offsets|torch] [extra bench args...]
# On a machine with one GPU, the two-GPU test (moe's multi_gpu_expert_parallel) is skipped
# and says so here; with two or more it runs. For the complete sanitizer sweep (every GPU
# test, benchmark shapes and the two-GPU test included) on a multi-GPU machine, use
# scripts/sanitize-parallel.sh instead of the `sanitize` modes here.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-device-out}
mkdir -p "$out"
what=${1:-all}
shift || true
bin=.device-bin
status=0
run() { # run NAME CMD...: tee to $out/NAME.log, remember failures
  local name=$1; shift
  echo "### $name: $*"
  local t0=$SECONDS
  "$@" > >(tee "$out/$name.log") 2>&1
  local rc=$?
  echo "### $name: exit $rc in $((SECONDS - t0))s"
  [ $rc -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv | tee "$out/gpu.txt"
if [[ $what == all || $what == sass ]]; then
  for arch in sm_90a; do
    ptxas -arch=$arch -v $bin/nvfp4_sm90a.ptx -o /tmp/k90.cubin > "$out/ptxas.log" 2>&1
    cuobjdump -sass /tmp/k90.cubin > /tmp/k90.sass
    python3 - <<'PY' | tee "$out/sass-summary.txt"
import re
cur=None; counts={}
for line in open('/tmp/k90.sass'):
    m=re.search(r'Function : (\S+)', line)
    if m: cur=m.group(1); counts[cur]={}
    elif cur:
        for op in ('HGMMA','HMMA','LDL','STL','LDS','STS','LDGSTS','BAR'):
            if re.search(r'\b'+op+r'\b', line): counts[cur][op]=counts[cur].get(op,0)+1
for f,c in counts.items(): print(f, c)
PY
  done
fi
gpus=$(nvidia-smi -L | grep -c '^GPU')
multi=()
if [ "$gpus" -lt 2 ]; then
  multi=(--skip multi_gpu_expert_parallel)
  echo "### $gpus GPU: skipping the two-GPU test (multi_gpu_expert_parallel); it is NOT run here"
fi
if [[ $what == all || $what == tests ]]; then
  for t in $bin/tests/*; do
    # NVFP4_BIN: the CLI tests run the staged binary (cargo's path does not exist here).
    NVFP4_BIN=$bin/nvfp4 run "test-$(basename "$t")" "$t" --include-ignored --test-threads=1 "${multi[@]}"
  done
  # The GPU tests again on the portable path (the default above is the device's best path).
  for t in $bin/tests/test-gpu $bin/tests/test-properties $bin/tests/test-offsets $bin/tests/test-reliability $bin/tests/test-device_fault $bin/tests/test-moe $bin/tests/test-quant $bin/tests/test-w4a16; do
    [ -x "$t" ] || continue
    NVFP4_PATH=portable run "test-$(basename "$t")-portable" "$t" --ignored --test-threads=1 "${multi[@]}"
  done
  # The NVFP4 tests again with the token pass on every group (by default only groups of 3e9
  # multiply-adds and more on the Hopper path, 5e9 on the portable one, take it), both paths.
  for t in $bin/tests/test-gpu $bin/tests/test-properties $bin/tests/test-offsets $bin/tests/test-reliability $bin/tests/test-moe; do
    [ -x "$t" ] || continue
    NVFP4_TOKEN_DEQUANT=always run "test-$(basename "$t")-token-pass" "$t" --ignored --test-threads=1 "${multi[@]}"
  done
  # And with the 8-stage one-tile-an-SM kernel off (its 4-stage form on every blocked-order
  # launch), token pass on every NVFP4 group.
  for t in $bin/tests/test-gpu $bin/tests/test-moe; do
    [ -x "$t" ] || continue
    NVFP4_ONE_PER_SM_DEEP=off NVFP4_TOKEN_DEQUANT=always run "test-$(basename "$t")-token-pass-deep-off" "$t" --ignored --test-threads=1 "${multi[@]}"
  done
  # And with the plain weight scales copied every chunk (the `_sg` forms off), token pass on
  # every NVFP4 group.
  for t in $bin/tests/test-gpu $bin/tests/test-moe; do
    [ -x "$t" ] || continue
    NVFP4_SCALE_GROUPS=off NVFP4_TOKEN_DEQUANT=always run "test-$(basename "$t")-token-pass-groups-off" "$t" --ignored --test-threads=1 "${multi[@]}"
  done
  # And with the pair kernel on every blocked-order 4-stage launch (by default only from two
  # waves of 256-row tiles), token pass on every NVFP4 group. The three gpu tests that check
  # plan facts the pairs change (dynamic units, tile counts) and the pair test (which sets
  # the switch itself) are skipped, by exact name (by substring, `guided_parts_relaunched`
  # also skipped `whole_tiles_and_guided_parts_relaunched`, which checks pair plans too).
  for t in $bin/tests/test-gpu $bin/tests/test-moe; do
    [ -x "$t" ] || continue
    NVFP4_PAIR_TILES=always NVFP4_TOKEN_DEQUANT=always run "test-$(basename "$t")-token-pass-pairs" "$t" --ignored --test-threads=1 "${multi[@]}" \
      --exact --skip pair_tiles_match_the_blocked_kernel --skip dynamic_units_relaunched --skip guided_parts_relaunched --skip one_per_sm_deep_kernel
  done
  for t in $bin/tests/test-gpu $bin/tests/test-properties; do
    [ -x "$t" ] || continue
    NVFP4_PATH=portable NVFP4_TOKEN_DEQUANT=always run "test-$(basename "$t")-token-pass-portable" "$t" --ignored --test-threads=1
  done
  # And with every tile cut into 3 K ranges (SplitK::Parts(3); by default only the tiles
  # past the last full wave are cut), both paths, NVFP4 and W4A16.
  for t in $bin/tests/test-gpu $bin/tests/test-w4a16; do
    [ -x "$t" ] || continue
    NVFP4_SPLIT_K=3 run "test-$(basename "$t")-split3" "$t" --ignored --test-threads=1
    NVFP4_PATH=portable NVFP4_SPLIT_K=3 run "test-$(basename "$t")-split3-portable" "$t" --ignored --test-threads=1
  done
  # And on the Hopper path with the weights always copied by cp.async (by default aligned
  # weights come by TMA, the `_wt` kernels), token pass on every NVFP4 group.
  for t in $bin/tests/test-gpu $bin/tests/test-w4a16 $bin/tests/test-moe; do
    [ -x "$t" ] || continue
    NVFP4_WEIGHTS_TMA=off NVFP4_TOKEN_DEQUANT=always run "test-$(basename "$t")-no-weights-tma" "$t" --ignored --test-threads=1 "${multi[@]}"
  done
fi
if [[ $what == all || $what == torch ]]; then
  # PyTorch round trip of `nvfp4 run` (safetensors in and out), both kernel paths.
  python3 -c 'import torch; print("torch", torch.__version__)' | tee "$out/torch-version.txt"
  run torch-roundtrip python3 scripts/torch_roundtrip.py $bin/nvfp4
  run torch-roundtrip-portable python3 scripts/torch_roundtrip.py $bin/nvfp4 --portable
fi
if [[ $what == all || $what == sanitize ]]; then
  # compute-sanitizer over the GPU test suite, both kernel paths (SANITIZE_PATHS), each tool
  # of SANITIZE_TOOLS on every GPU test binary. Skipped under the sanitizers: the G=8 K=7168
  # benchmark shapes (the code paths of the test shapes, 10-100x slower there), the two-GPU
  # test, the 4099 x 7168 quantization test, and the > 2 GiB offsets test, which has its own
  # mode (sanitize-offsets) because racecheck needs minutes on it.
  for path in ${SANITIZE_PATHS:-auto portable}; do
    for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
      for t in gpu moe reliability properties quant w4a16; do
        exe=$bin/tests/test-$t
        [ -x "$exe" ] || continue
        NVFP4_PATH=$path run "$tool-$path-$t" timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer \
          --tool $tool --error-exitcode 1 "$exe" --ignored --test-threads=1 \
          --skip gpu_mode_benchmarks --skip benchmark_shape --skip multi_gpu \
          --skip gpu_large_tensor --skip gpu_mode_benchmark_shapes
      done
    done
  done
  grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$out"/memcheck-* "$out"/racecheck-* "$out"/synccheck-* "$out"/initcheck-* 2>/dev/null | sort | uniq -c
fi
if [[ $what == all || $what == sanitize-pairs ]]; then
  # The pair kernels under every tool through `nvfp4 run` (no cuBLAS, whose own hazards fill
  # racecheck's report): a G2 M 250 N 8448 K 512 group (264 128-row tiles, 132 pair tiles)
  # from scripts/torch_roundtrip.py, pairs and the pass forced, uncut, cut in 3 (three
  # dynamic units a cluster: each value word of the pair records reused, H200 run 215) and
  # in 12 (8 chunks: empty parts).
  pw=$(mktemp -d)
  run torch-pairs-input python3 scripts/torch_roundtrip.py $bin/nvfp4 \
    --shapes '250,8448,512;250,8448,512' --keep "$pw"
  for sk in off 3 12; do
    for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
      run "$tool-pairs-split-$sk" timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer \
        --tool $tool --error-exitcode 1 $bin/nvfp4 run --input "$pw/in.safetensors" \
        --output "$pw/$tool-$sk.safetensors" --pair-tiles always --token-pass always --split-k $sk
    done
  done
  rm -rf "$pw"
fi
if [[ $what == sanitize-offsets ]]; then
  # The 64-bit offset tests: `strided_rows_past_4_gib` under every tool, then the 2.15 GB B
  # operand (`b_operand_past_2_gib`) under OFFSETS_BIG_TOOLS (racecheck takes minutes there).
  for path in ${SANITIZE_PATHS:-auto portable}; do
    for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
      NVFP4_PATH=$path run "$tool-$path-offsets-strided" timeout 200 compute-sanitizer \
        --tool $tool --error-exitcode 1 $bin/tests/test-offsets --ignored --test-threads=1 \
        --exact strided_rows_past_4_gib
    done
    for tool in ${OFFSETS_BIG_TOOLS:-memcheck synccheck initcheck racecheck}; do
      NVFP4_PATH=$path run "$tool-$path-offsets-big" timeout ${SANITIZE_TIMEOUT:-500} \
        compute-sanitizer --tool $tool --error-exitcode 1 $bin/tests/test-offsets --ignored \
        --test-threads=1 --exact b_operand_past_2_gib
    done
  done
fi
if [[ $what == all || $what == check ]]; then
  run check $bin/nvfp4 check
  run check-portable $bin/nvfp4 check --portable
fi
if [[ $what == all || $what == bench ]]; then
  run bench $bin/nvfp4 bench --json "$out/bench.json" "$@"
  run bench-portable $bin/nvfp4 bench --portable --json "$out/bench-portable.json" "$@"
fi
echo "device-verify: overall status $status"
exit $status
