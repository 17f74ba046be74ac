#!/usr/bin/env python3
"""Reload latency: time from a provider file's write (atomic rename) to the first
request that sees the new configuration, measured from outside over HTTP.
Usage: bench/reload.py [rounds]   (starts target/release/llmhub on 127.0.0.1:9103)"""
import json, os, statistics, subprocess, sys, tempfile, time, urllib.request

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
work = tempfile.mkdtemp()
os.makedirs(f"{work}/providers.d")
open(f"{work}/hub.toml", "w").write('[server]\nlisten = "127.0.0.1:9103"\n')
provider = f"{work}/providers.d/echo.toml"

def write(model):
    tmp = f"{work}/providers.d/.echo.toml.tmp"
    open(tmp, "w").write(f'adapter = "echo"\nmodels = ["{model}"]\n')
    os.rename(tmp, provider)

def generation():
    with urllib.request.urlopen("http://127.0.0.1:9103/health") as r:
        return json.load(r)["config"]["generation"]

write("m0")
env = dict(os.environ, RUST_LOG="warn")
server = subprocess.Popen(["target/release/llmhub", "serve", "--config", f"{work}/hub.toml"], env=env)
try:
    for _ in range(200):
        try:
            generation(); break
        except OSError:
            time.sleep(0.05)
    samples = []
    for i in range(1, rounds + 1):
        before = generation()
        start = time.perf_counter()
        write(f"m{i}")
        while generation() == before:
            if time.perf_counter() - start > 5:
                sys.exit("no reload within 5 s")
        samples.append((time.perf_counter() - start) * 1000)
        time.sleep(0.1)  # let the debouncer go quiet so each round is a separate change
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    print(f"reload latency over {rounds} edits: median {statistics.median(samples):.1f} ms, "
          f"p90 {p(0.9):.1f} ms, max {samples[-1]:.1f} ms")
finally:
    server.terminate()
