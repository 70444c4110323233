#!/usr/bin/env python3
"""Durability-side figures of one pushgate node (and memory of the reference):

  memory      RSS when empty, and after ten rounds of overwrites of G groups x S
              series: (RSS after - RSS empty) / series. Runs for every server
              given (pushgate and, side by side, the reference).
  restart     restart-to-ready with N stored series, after SIGKILL (log replay
              from the last snapshot) and after SIGTERM.
  fsync       pushes/s, log entries/s and fsyncs/s during a wrk push run.
  datadir     size of the data directory after P pushes.

Usage: bench/durability.py --pushgate target/release/pushgate [--reference prometheus-pushgateway]
Loopback only; every process it starts is stopped by PID.
"""
import argparse, http.client, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_PUSH = os.path.join(HERE, "..", "..", "shared", "bench", "lua", "push.lua")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_detail(pid):
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("RssAnon", "RssFile", "VmRSS")):
                d[line.split(":")[0]] = int(line.split()[1])
    return d


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, cmd, port, datadir):
        self.cmd, self.port, self.datadir = cmd, port, datadir
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/-/ready"); r = c.getresponse(); r.read()
                if r.status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("not ready: %s" % self.cmd)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait()


def body(groups_index, spg, rnd):
    lines = ["# TYPE dur_gauge gauge"]
    for k in range(spg):
        lines.append('dur_gauge{k="%d"} %d' % (k, groups_index * 1000 + k + rnd))
    return ("\n".join(lines) + "\n").encode()


def fill(port, groups, spg, rounds, conns=4):
    def worker(start):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for r in range(rounds):
            for g in range(start, groups, conns):
                c.request("PUT", "/metrics/job/dur_%d/instance/%d" % (g // 10, g % 10), body(g, spg, r))
                resp = c.getresponse(); resp.read()
                assert resp.status in (200, 202), resp.status
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    [t.start() for t in ts]; [t.join() for t in ts]


def metric(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics?consistency=stale"); text = c.getresponse().read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def pushgate_cmd(binary, port, datadir):
    return [binary, "--web.listen-address=127.0.0.1:%d" % port, "--storage.path=%s" % datadir]


def reference_cmd(binary, port, datadir):
    return [binary, "--web.listen-address=127.0.0.1:%d" % port, "--persistence.file="]


def memory(label, make_cmd, groups, spg, rounds, out):
    tmp = tempfile.mkdtemp(prefix="pgbench-mem-")
    port = free_port()
    s = Server(make_cmd(port, os.path.join(tmp, "data")), port, tmp)
    s.start(); time.sleep(2)
    empty = rss_kb(s.proc.pid)
    t0 = time.monotonic(); fill(port, groups, spg, rounds); secs = time.monotonic() - t0
    time.sleep(2)
    after = rss_kb(s.proc.pid)
    series = groups * spg
    rec = {"bench": "memory", "server": label, "groups": groups, "series_per_group": spg, "rounds": rounds,
           "rss_empty_kb": empty, "rss_after_kb": after,
           "bytes_per_series": round((after - empty) * 1024 / series, 1), "fill_seconds": round(secs, 1)}
    print(json.dumps(rec)); out.append(rec)
    s.stop(); shutil.rmtree(tmp, ignore_errors=True)


def restart(binary, groups, spg, out):
    tmp = tempfile.mkdtemp(prefix="pgbench-restart-")
    port = free_port()
    data = os.path.join(tmp, "data")
    s = Server(pushgate_cmd(binary, port, data), port, tmp)
    s.start()
    fill(port, groups, spg, 3)
    for how, sig in (("SIGKILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
        s.stop(sig)
        ready = s.start()
        series = metric(port, "pushgate_series")
        rec = {"bench": "restart", "after": how, "stored_series": int(series), "restart_to_ready_s": round(ready, 3),
               "data_dir_bytes": du(data)}
        print(json.dumps(rec)); out.append(rec)
    s.stop(); shutil.rmtree(tmp, ignore_errors=True)


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def wrk_push(port, seconds, conns, max_req=None, groups=1000):
    env = dict(os.environ, BENCH_GROUPS=str(groups))
    if max_req:
        env["BENCH_MAX_REQ"] = str(max_req)
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "30s", "-s", WRK_PUSH,
           "http://127.0.0.1:%d" % port]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
    for line in r.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return 0.0


def fsync_and_datadir(binary, pushes, out):
    tmp = tempfile.mkdtemp(prefix="pgbench-fsync-")
    port = free_port(); data = os.path.join(tmp, "data")
    s = Server(pushgate_cmd(binary, port, data), port, tmp)
    s.start()
    fill(port, 1000, 33, 1)
    before = {n: metric(port, n) for n in ("pushgate_mutations_applied_total", "pushgate_log_entries_appended_total", "pushgate_log_fsyncs_total")}
    t0 = time.monotonic(); rps = wrk_push(port, 10, 64); secs = time.monotonic() - t0
    after = {n: metric(port, n) for n in before}
    d = {n: (after[n] - before[n]) / secs for n in before}
    rec = {"bench": "fsync", "conns": 64, "pushes_per_s": round(rps), "applied_per_s": round(d["pushgate_mutations_applied_total"]),
           "log_entries_per_s": round(d["pushgate_log_entries_appended_total"]), "fsyncs_per_s": round(d["pushgate_log_fsyncs_total"]),
           "mutations_per_entry": round(d["pushgate_mutations_applied_total"] / max(d["pushgate_log_entries_appended_total"], 1), 1)}
    print(json.dumps(rec)); out.append(rec)
    # Data directory after `pushes` pushes of 33 series to 1000 groups.
    done = metric(port, "pushgate_mutations_applied_total")
    t0 = time.monotonic()
    while done < pushes and time.monotonic() - t0 < 1800:
        wrk_push(port, 60, 64, max_req=int(pushes - done))
        done = metric(port, "pushgate_mutations_applied_total")
    time.sleep(2)
    rec = {"bench": "datadir", "pushes": int(done), "data_dir_bytes": du(data), "log_bytes": du(os.path.join(data, "raft-log")),
           "snapshot_bytes": du(os.path.join(data, "snapshots")), "stored_series": int(metric(port, "pushgate_series")),
           "rss_kb": rss_kb(s.proc.pid)}
    print(json.dumps(rec)); out.append(rec)
    s.stop(); shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pushgate", required=True)
    ap.add_argument("--reference", default=None)
    ap.add_argument("--only", default="memory,restart,fsync")
    ap.add_argument("--pushes", type=int, default=1_000_000)
    args = ap.parse_args()
    out = []
    only = args.only.split(",")
    binary = os.path.abspath(args.pushgate)
    if "memory" in only:
        for rnd in range(1):
            memory("pushgate", lambda p, d: pushgate_cmd(binary, p, d), 1000, 33, 10, out)
            if args.reference:
                memory("reference", lambda p, d: reference_cmd(args.reference, p, d), 1000, 33, 10, out)
        memory("pushgate", lambda p, d: pushgate_cmd(binary, p, d), 10000, 33, 10, out)
        memory("pushgate", lambda p, d: pushgate_cmd(binary, p, d), 1000, 500, 10, out)
    if "restart" in only:
        restart(binary, 200, 500, out)
    if "fsync" in only:
        fsync_and_datadir(binary, args.pushes, out)


if __name__ == "__main__":
    main()
