#!/usr/bin/env bash
# The whole GPU test suite under compute-sanitizer (memcheck, racecheck, synccheck,
# initcheck), both kernel paths, spread over every GPU of the machine: one worker per GPU
# takes jobs from a shared queue, longest first. Runs on the GPU machine over what
# scripts/stage-device.sh staged in .device-bin/. Logs: $OUT/sanitize/<job>.log, a line per
# job in $OUT/sanitize/jobs.txt, and the summary counts at the end.
#   bash scripts/sanitize-parallel.sh [DEADLINE_S]
# DEADLINE_S (default 540): no job starts after it, and a running job is killed at it (its
# log then says "TIMEOUT"); jobs not started are listed as "NOT RUN".
# Not run under any sanitizer, by design: tests/tests/device_fault.rs (it faults on purpose).
# The two-GPU test runs on this worker's GPU and the next one; it is skipped on one GPU.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=.device-bin/tests
out=${OUT:-device-out}/sanitize
mkdir -p "$out"
deadline=$((SECONDS + ${1:-540}))
gpus=$(nvidia-smi -L | grep -c '^GPU')
tools="racecheck memcheck synccheck initcheck"
queue=$out/queue
: > "$queue"

# Longest first: the 2.15 GB B operand and the benchmark shapes, then the test binaries.
for path in auto portable; do
  for tool in $tools; do
    echo "$path $tool offsets --exact b_operand_past_2_gib" >> "$queue"
    echo "$path $tool gpu --exact gpu_mode_benchmarks_full_range" >> "$queue"
    echo "$path $tool w4a16 --exact gpu_mode_benchmark_shapes" >> "$queue"
    echo "$path $tool moe --exact contiguous_device_counts_benchmark_shape" >> "$queue"
  done
done
for path in auto portable; do
  for tool in $tools; do
    [ "$gpus" -ge 2 ] && echo "$path $tool moe --exact multi_gpu_expert_parallel" >> "$queue"
    echo "$path $tool offsets --exact strided_rows_past_4_gib" >> "$queue"
    # Every other GPU test of these binaries (the ones above are skipped here).
    for t in gpu moe reliability properties quant w4a16; do
      echo "$path $tool $t --skip gpu_mode_benchmarks_full_range --skip gpu_mode_benchmark_shapes --skip contiguous_device_counts_benchmark_shape --skip multi_gpu_expert_parallel --skip gpu_large_tensor_matches_cpu" >> "$queue"
    done
  done
done
# The quantizer has no kernel path; the CLI tests run the nvfp4 binary as a child process.
for tool in $tools; do
  echo "auto $tool quant --exact gpu_large_tensor_matches_cpu" >> "$queue"
  echo "auto $tool cli_run" >> "$queue"
done
[ "$gpus" -ge 2 ] || echo "### one GPU: multi_gpu_expert_parallel is NOT run under the sanitizers"
echo "### $(wc -l < "$queue") jobs on $gpus GPUs"

worker() { # worker GPU
  local gpu=$1 line path tool t args name log rc left
  while true; do
    line=$(flock "$queue.lock" bash -c 'l=$(head -n1 "$0"); [ -n "$l" ] && sed -i 1d "$0"; echo "$l"' "$queue")
    [ -n "$line" ] || return 0
    read -r path tool t args <<< "$line"
    name="$tool-$path-$t$(echo " $args" | sed 's/ --exact /-/; s/ --skip.*/-rest/; s/ //g')"
    log=$out/$name.log
    left=$((deadline - SECONDS))
    if [ "$left" -le 5 ]; then
      echo "NOT RUN (deadline) $line" >> "$out/jobs.txt"
      continue
    fi
    local devs=$gpu
    [[ $args == *"--exact multi_gpu"* ]] && devs="$gpu,$(((gpu + 1) % gpus))"
    local t0=$SECONDS
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$devs NVFP4_PATH=$path NVFP4_BIN=.device-bin/nvfp4 RAYON_NUM_THREADS=8 \
      timeout "$left" compute-sanitizer --tool "$tool" --error-exitcode 1 \
      "$bin/test-$t" --include-ignored --test-threads=1 $args > "$log" 2>&1
    rc=$?
    [ $rc -eq 124 ] && echo "TIMEOUT after ${left}s" >> "$log"
    echo "rc=$rc $((SECONDS - t0))s gpu=$devs $name" >> "$out/jobs.txt"
  done
}
for ((g = 0; g < gpus; g++)); do worker "$g" & done
wait
echo "### jobs (rc, seconds, GPU, name):"
sort "$out/jobs.txt"
echo "### summaries:"
grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$out"/*.log | sort | uniq -c
echo "### test results:"
grep -h "^test result" "$out"/*.log | sed 's/finished in.*//' | sort | uniq -c
if grep -q "^rc=[^0]\|^NOT RUN" "$out/jobs.txt"; then echo "sanitize-parallel: NOT all clean"; exit 1; fi
echo "sanitize-parallel: all $(wc -l < "$out/jobs.txt") jobs exit 0"
