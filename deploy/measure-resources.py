#!/usr/bin/env python3
"""Measures the agent's memory for deploy/base/deployment.yaml's resources.

Runs `strata run --once` against the simulated cluster (kubesim binary) with the example
profile repository (examples/, served by `git daemon` on 127.0.0.1), samples /proc every 50 ms,
and prints the peak RSS of strata itself, of the largest helm child, and of strata plus all
its helm children at once, plus the CPU seconds used.

Usage: deploy/measure-resources.py STRATA_BIN [HELM_BIN]
  (build first: cargo build -p kubesim --bin kubesim; HELM_BIN default .tools/helm4/helm)
"""
import json, os, resource, shutil, socket, subprocess, sys, tempfile, time
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
strata = sys.argv[1]
helm = sys.argv[2] if len(sys.argv) > 2 else f"{repo}/.tools/helm4/helm"
work = tempfile.mkdtemp(prefix="h6-meas-")
try:
    # example repository served by git daemon
    src = os.path.join(work, "srv", "profiles")
    shutil.copytree(f"{repo}/examples", src, symlinks=True)
    g = lambda *a: subprocess.run(["git", "-C", src, *a], check=True, capture_output=True)
    g("init", "-q", "-b", "main"); g("add", "-A"); g("-c", "user.name=m", "-c", "user.email=m@l", "commit", "-q", "-m", "x")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}", f"--base-path={work}/srv", "--export-all", f"{work}/srv"], stderr=subprocess.DEVNULL)
    kubesim = subprocess.Popen([f"{repo}/target/debug/kubesim", "--listen", "127.0.0.1:0", "--kubeconfig", f"{work}/kubeconfig"], stdout=subprocess.PIPE, text=True)
    url = kubesim.stdout.readline().strip()
    time.sleep(0.5)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); sport = s.getsockname()[1]; s.close()
    env = {"PATH": os.environ["PATH"], "HOME": work, "KUBECONFIG": f"{work}/kubeconfig",
           "STRATA_GIT_URL": f"git://127.0.0.1:{port}/profiles", "STRATA_WORK_DIR": f"{work}/w",
           "STRATA_LISTEN": f"127.0.0.1:{sport}", "STRATA_HELM": helm, "STRATA_LOG_FORMAT": "json",
           "STRATA_NAMESPACE": "strata-system", "STRATA_CONCURRENCY": "4"}
    t0 = time.time()
    p = subprocess.Popen([strata, "run", "--once"], env=env, stdout=open(f"{work}/log", "w"), stderr=subprocess.STDOUT)
    max_strata = 0; max_total = 0; max_helm_one = 0; cpu_samples = []
    def rss(pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for l in f:
                    if l.startswith("VmRSS:"): return int(l.split()[1]) // 1024
        except FileNotFoundError: return 0
        return 0
    def children(pid):
        out = []
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/children") as f:
                    out += [int(x) for x in f.read().split()]
        except FileNotFoundError: pass
        return out
    while p.poll() is None:
        desc = []; stack = [p.pid]
        while stack:
            c = children(stack.pop()); desc += c; stack += c
        a = rss(p.pid); hs = [rss(c) for c in desc]
        max_strata = max(max_strata, a); max_total = max(max_total, a + sum(hs))
        if hs: max_helm_one = max(max_helm_one, max(hs))
        time.sleep(0.05)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"helm": helm, "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2), "exit": p.returncode, "seconds": round(time.time()-t0,1), "strata_max_rss_mib": max_strata,
                      "largest_helm_rss_mib": max_helm_one, "strata_plus_helms_max_mib": max_total}))
    if p.returncode != 0:
        print(open(f"{work}/log").read()[-3000:])
    kubesim.terminate(); daemon.terminate(); kubesim.wait(); daemon.wait()
finally:
    shutil.rmtree(work, ignore_errors=True)
