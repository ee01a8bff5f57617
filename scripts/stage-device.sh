#!/usr/bin/env bash
# Builds everything the GPU machine runs (it has no Rust) into .device-bin/ (git-ignored):
# the release test executables, the `nvfp4` CLI and the committed PTX. Name `.device-bin` in
# the device tool's `carry`, then run `bash scripts/device-verify.sh` there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .device-bin && mkdir -p .device-bin/tests
cargo build --release -p host --bin nvfp4 || echo "stage-device: WARNING: the nvfp4 CLI did not build; staging tests only"
cargo test --workspace --release --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m.get("profile", {}).get("test"):
        name = m["target"]["name"]
        kind = m["target"]["kind"][0]
        shutil.copy(exe, f".device-bin/tests/{kind}-{name}")
'
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')
cp "$target_dir/release/nvfp4" .device-bin/ 2>/dev/null || true
cp host/ptx/*.ptx .device-bin/
ls -la .device-bin .device-bin/tests
du -sh .device-bin
