#!/usr/bin/env bash
# Sets the machine up (scripts/setup.sh) and runs the benchmark CLI:
#   cargo run --release -p host --bin nvfp4 -- bench [ARGS...]
# Extra arguments go to `nvfp4 bench`. Needs a CUDA driver and GPU at run time; building needs
# neither (cudarc loads libcuda when the program starts).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
exec cargo run --release -p host --bin nvfp4 -- bench "$@"
