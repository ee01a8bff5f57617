#!/usr/bin/env python3
"""Prints the scheduling control bits of sm_90 SASS, which cuobjdump leaves in the encoding.

    ptxas -arch=sm_90a host/ptx/nvfp4_sm90a.ptx -o /tmp/k.cubin
    cuobjdump -sass -fun nvfp4_grouped_gemm_wgmma_f16a /tmp/k.cubin > /tmp/k.sass
    python3 scripts/sass-ctl.py /tmp/k.sass [FIRST_ADDR LAST_ADDR]   # addresses in hex

One line per instruction: address, stall cycles, the scoreboard it sets on write (W0-W5) and
on register read (R0-R5), the scoreboards it waits on, and the instruction. An instruction that
waits on a scoreboard waits for every load that set it, whatever registers they wrote (PERF.md
run 42: how a load issued early can make an unrelated instruction wait for it).
Layout (bits 41-61 of each instruction's second 64-bit word): stall 4 bits, yield 1,
write barrier 3 (7 = none), read barrier 3 (7 = none), wait mask 6, reuse 4.
"""
import re
import sys


def main():
    if len(sys.argv) not in (2, 4):
        sys.exit(__doc__)
    lines = open(sys.argv[1]).read().split("\n")
    lo, hi = (int(sys.argv[2], 16), int(sys.argv[3], 16)) if len(sys.argv) == 4 else (0, 1 << 62)
    i = 0
    while i + 1 < len(lines):
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?);\s*/\* (0x[0-9a-f]+) \*/", lines[i])
        m2 = re.search(r"/\* (0x[0-9a-f]+) \*/", lines[i + 1]) if m else None
        if not (m and m2):
            i += 1
            continue
        addr, text = int(m.group(1), 16), m.group(2).strip()
        ctl = int(m2.group(1), 16) >> 41
        stall, wb, rb, wait = ctl & 0xF, (ctl >> 5) & 7, (ctl >> 8) & 7, (ctl >> 11) & 0x3F
        if lo <= addr <= hi:
            w = f"W{wb}" if wb != 7 else "  "
            r = f"R{rb}" if rb != 7 else "  "
            waits = ",".join(str(b) for b in range(6) if wait >> b & 1)
            print(f"{addr:05x} st{stall:2d} {w} {r} wait[{waits}] {text}")
        i += 2


if __name__ == "__main__":
    main()
