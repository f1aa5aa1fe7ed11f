"""`make bench`: every benchmark script in turn; each prints its table and writes JSON to
benchmarks/results/. Pass --quick for a smoke run."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_tick.py", "bench_fib_tick.py", "bench_aws_tick.py", "bench_indicators.py", "bench_backtest.py"]


def main() -> int:
    extra = sys.argv[1:]
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} {' '.join(extra)}".rstrip(), flush=True)
        if subprocess.run([sys.executable, str(HERE / name), *extra]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
