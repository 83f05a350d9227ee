#!/usr/bin/env python3
"""Which crates' code a running imstatus has mapped: B8's idle RSS is mostly the binary's own
code pages (file-backed, shared, mapped in the kernel's 64 KB fault-around blocks), not memory
it allocated. Reads /proc/PID/pagemap (root) for the executable's text mapping and attributes
each present 4 KB page to the crate with the most symbol bytes in it (`nm -C`; the release
build keeps its symbol table):

  sudo python3 bench/py/text_pages.py PID target/release/imstatus

Prints the present text in KB, then per crate the KB present and the crate's whole text."""
import bisect
import collections
import re
import struct
import subprocess
import sys


def crate(symbol):
    name = symbol.lstrip('<').replace('&', '').replace('dyn ', '').replace('mut ', '')
    m = re.match(r'([A-Za-z_][A-Za-z0-9_]*)', name)
    return m.group(1) if m else '?'


def main():
    pid, exe = int(sys.argv[1]), sys.argv[2]
    base, text = None, []
    for line in open(f'/proc/{pid}/maps'):
        f = line.split()
        if len(f) >= 6 and f[5] == exe:
            start, end = (int(x, 16) for x in f[0].split('-'))
            base = start if base is None else base   # the first mapping: file offset 0
            if 'x' in f[1]:
                text.append((start, end))
    present = []
    with open(f'/proc/{pid}/pagemap', 'rb') as pm:
        for start, end in text:
            pm.seek(start // 4096 * 8)
            data = pm.read((end - start) // 4096 * 8)
            for i in range(0, len(data), 8):
                if struct.unpack('<Q', data[i:i + 8])[0] >> 63:
                    present.append(start + i // 8 * 4096 - base)
    syms = []
    nm = subprocess.run(['nm', '-C', '--defined-only', '-S', exe], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        f = line.split(' ', 3)
        if len(f) == 4 and f[2] in 'tTwW':
            syms.append((int(f[0], 16), int(f[1], 16), crate(f[3])))
    syms.sort()
    starts = [s[0] for s in syms]
    whole = collections.Counter()
    for _, size, c in syms:
        whole[c] += size
    mapped = collections.Counter()
    for page in present:
        i = bisect.bisect_right(starts, page + 4095) - 1
        owners = collections.Counter()
        # Symbols overlapping the page: walk back while they may still reach into it.
        for _ in range(10_000):
            if i < 0:
                break
            addr, size, c = syms[i]
            lo, hi = max(addr, page), min(addr + size, page + 4096)
            if hi > lo:
                owners[c] += hi - lo
            if addr + (1 << 20) < page:   # no function is a megabyte long
                break
            i -= 1
        mapped[owners.most_common(1)[0][0] if owners else '?'] += 4
    print(f'present text: {len(present) * 4} KB')
    for c, kb in mapped.most_common(30):
        print(f'{kb:6d} KB  {c}  (whole text {whole[c] // 1024} KB)')


if __name__ == '__main__':
    main()
