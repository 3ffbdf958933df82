"""Speed and memory benchmarks of ovdet (not tests). Run from the repository root, e.g.
``python -m benchmarks.bench_inference --help``; results and commands are in docs/speed.md."""
