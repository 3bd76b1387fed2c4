#!/usr/bin/env python3
"""Idle keep-alive connections: what each one costs switchyard and nginx.

    benches/idle.py                      # 8,000 connections
    CONNS=2000 benches/idle.py
    SWITCHYARD_BIN=path/to/switchyard benches/idle.py   # skip the build

For each proxy in turn (switchyard with the default runtime, nginx with one
worker; both pinned to CPU 1, one upstream nginx on CPU 0): note the proxy's
RSS and open file descriptors, open CONNS HTTP/1.1 keep-alive connections
from this process, send one request on each and read its answer, note RSS
and descriptors again with every connection idle, close them all, and
follow RSS for up to 30 s until it is back within 1.5 x of the idle
baseline. switchyard runs with its default timeouts: its 10 s request-head
timeout also closes idle keep-alive connections, so the connections are
opened and measured within that time. Then switchyard gets CONNS
connections once more, left idle until that timeout closes them from the
proxy's side, and RSS is followed the same way (memory freed by timers
while no request arrives). Everything listens on 127.0.0.1, on free ports.
Prints one table and one summary line.
"""

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CONNS = int(os.environ.get("CONNS", "8000"))
# switchyard's default request-head timeout, which also ends idle keep-alive.
HEADER_TIMEOUT_S = 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROXY_PORT, NGINX_PORT, UP = free_port(), free_port(), free_port()
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def fail(msg):
    print(f"idle.py: {msg}", file=sys.stderr)
    sys.exit(1)


def need(tool, package):
    if shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"):
        return
    print(f"installing {package} ...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def rss_kb(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_port(port, deadline=5.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    fail(f"nothing listens on 127.0.0.1:{port}")


def request(sock):
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed before the answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"answer {head.splitlines()[0]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed inside the body")
        body += chunk


def open_idle(name, port):
    socks = []
    try:
        for _ in range(CONNS):
            s = socket.create_connection(("127.0.0.1", port))
            request(s)
            socks.append(s)
    except OSError as e:
        fail(f"{name}: connection {len(socks) + 1} of {CONNS}: {e}")
    return socks


def follow_rss(pid, base_rss):
    """RSS when it is back within 1.5 x of base_rss, or after 30 s; and when."""
    closed = time.monotonic()
    while True:
        rss = rss_kb(pid)
        if rss <= 1.5 * base_rss:
            return rss, time.monotonic() - closed
        if time.monotonic() - closed >= 30:
            return rss, None
        time.sleep(0.5)


def measure_timed_out(pid, port, base_rss, base_fds, timeout_s):
    """The same connections again, left idle until the proxy closes them."""
    socks = open_idle("switchyard", port)
    end = time.monotonic() + timeout_s + 10
    while fds(pid) > base_fds + CONNS // 100:
        if time.monotonic() > end:
            fail(f"switchyard kept the idle connections open past {timeout_s + 10} s")
        time.sleep(0.2)
    after_rss, back_in = follow_rss(pid, base_rss)
    for s in socks:
        s.close()
    return {"after_rss": after_rss, "back_in": back_in}


def measure(name, port, pid):
    with socket.create_connection(("127.0.0.1", port)) as s:
        request(s)
    time.sleep(0.5)
    base_rss, base_fds = rss_kb(pid), fds(pid)
    started = time.monotonic()
    socks = open_idle(name, port)
    opened = time.monotonic() - started
    time.sleep(0.5)
    idle_rss, idle_fds = rss_kb(pid), fds(pid)
    for s in socks:
        s.close()
    after_rss, back_in = follow_rss(pid, base_rss)
    return {
        "name": name,
        "base_rss": base_rss,
        "idle_rss": idle_rss,
        "per_conn_kb": (idle_rss - base_rss) / CONNS,
        "base_fds": base_fds,
        "fds_per_conn": (idle_fds - base_fds) / CONNS,
        "idle_fds": idle_fds,
        "after_rss": after_rss,
        "back_in": back_in,
        "opened_s": opened,
    }


def main():
    need("nginx", "nginx-light")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CONNS + 1000:
        fail(f"the open-file limit ({hard}) is below {CONNS + 1000}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    binary = os.environ.get("SWITCHYARD_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                        f"{ROOT}/Cargo.toml", "--bin", "switchyard"], check=True)
        binary = f"{ROOT}/target/release/switchyard"
    work = tempfile.mkdtemp(prefix="switchyard-idle.")
    procs, nginx_pids = [], []
    try:
        temp = " ".join(f"{k}_temp_path {work};" for k in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(f"{work}/up.conf", "w") as f:
            f.write(f"""worker_processes 1; daemon on; pid {work}/up.pid;
error_log {work}/up.err error; events {{ worker_connections 1024; }}
http {{ access_log off; {temp}
  server {{ listen 127.0.0.1:{UP}; location / {{ return 200 "idle upstream\\n"; }} }} }}
""")
        with open(f"{work}/px.conf", "w") as f:
            f.write(f"""worker_processes 1; worker_rlimit_nofile {CONNS + 1000}; daemon on;
pid {work}/px.pid; error_log {work}/px.err error;
events {{ worker_connections {CONNS + 1000}; }}
http {{ access_log off; {temp}
  upstream pool {{ server 127.0.0.1:{UP}; keepalive 128; }}
  server {{ listen 127.0.0.1:{NGINX_PORT} backlog=4096;
    location / {{ proxy_pass http://pool; proxy_http_version 1.1;
      proxy_set_header Connection ""; }} }} }}
""")
        with open(f"{work}/switchyard.toml", "w") as f:
            f.write(f"""[listener]
address = "127.0.0.1:{PROXY_PORT}"
[admin]
enabled = false
[log]
level = "warn"
access_log = false
[[services]]
name = "bench"
static = {{ active = ["127.0.0.1:{UP}"] }}
""")
        subprocess.run(["taskset", "-c", "0", nginx, "-c", f"{work}/up.conf", "-p", work],
                       check=True)
        nginx_pids.append(f"{work}/up.pid")
        subprocess.run(["taskset", "-c", "1", nginx, "-c", f"{work}/px.conf", "-p", work],
                       check=True)
        nginx_pids.append(f"{work}/px.pid")
        with open(f"{work}/switchyard.log", "w") as log:
            sy = subprocess.Popen(["taskset", "-c", "1", binary, "proxy", "--config",
                                   f"{work}/switchyard.toml"], stderr=log)
        procs.append(sy)
        wait_port(UP)
        wait_port(NGINX_PORT)
        wait_port(PROXY_PORT)
        with open(f"{work}/px.pid") as f:
            master = f.read().strip()
        worker = subprocess.run(["pgrep", "-P", master], capture_output=True, text=True,
                                check=True).stdout.split()[0]
        results = [measure("switchyard", PROXY_PORT, sy.pid),
                   measure("nginx", NGINX_PORT, int(worker))]
        timed_out = measure_timed_out(sy.pid, PROXY_PORT, results[0]["base_rss"],
                                      results[0]["base_fds"], HEADER_TIMEOUT_S)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        for pidfile in nginx_pids:
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(0.3)
        shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; {CONNS} idle HTTP/1.1 "
          "keep-alive connections, one request each; proxy on CPU 1")
    print(f"{'proxy':<11} {'RSS before':>11} {'RSS idle':>10} {'KB/conn':>8} {'fds/conn':>9} "
          f"{'RSS 30s after close':>20} {'back within 1.5x':>17}")
    for r in results:
        back = f"{r['back_in']:.1f} s" if r["back_in"] is not None else "no"
        print(f"{r['name']:<11} {r['base_rss'] / 1024:>8.1f} MB {r['idle_rss'] / 1024:>7.1f} MB "
              f"{r['per_conn_kb']:>8.2f} {r['fds_per_conn']:>9.2f} "
              f"{r['after_rss'] / 1024:>17.1f} MB {back:>17}")
    sy, ng = results
    print(f"idle {CONNS}: switchyard {sy['per_conn_kb']:.2f} KB/conn, {sy['fds_per_conn']:.2f} fd/conn, "
          f"RSS after close {sy['after_rss'] / 1024:.1f} MB (baseline {sy['base_rss'] / 1024:.1f} MB, "
          f"{'back in ' + format(sy['back_in'], '.1f') + ' s' if sy['back_in'] is not None else 'not back in 30 s'}); "
          f"closed by its idle timeout: RSS after {timed_out['after_rss'] / 1024:.1f} MB "
          f"({'back in ' + format(timed_out['back_in'], '.1f') + ' s' if timed_out['back_in'] is not None else 'not back in 30 s'}); "
          f"nginx {ng['per_conn_kb']:.2f} KB/conn, {ng['fds_per_conn']:.2f} fd/conn; "
          f"ratio {sy['per_conn_kb'] / max(ng['per_conn_kb'], 0.01):.1f} x")


if __name__ == "__main__":
    main()
