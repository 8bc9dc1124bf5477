#!/usr/bin/python3
"""tc_measure.py — measure TCP throughput between two hosts (here: two network namespaces).

  tc_measure.py server --bind ADDR [--port P]        receive one connection, print Mbit/s
  tc_measure.py client --host ADDR [--port P] [--seconds S]   send as fast as possible

The server reports the rate over the receive window excluding the first 0.5 s (slow start,
tbf burst), which is what the rate limit should cap. Standard library only.
"""
import argparse
import socket
import sys
import time


def server(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    s.listen(1)
    s.settimeout(30)
    c, _ = s.accept()
    total, t0, mark_t, mark_b = 0, time.perf_counter(), None, 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        total += len(b)
        now = time.perf_counter()
        if mark_t is None and now - t0 >= 0.5:
            mark_t, mark_b = now, total
    t1 = time.perf_counter()
    if mark_t is None:
        mark_t, mark_b = t0, 0
    rate = (total - mark_b) * 8 / max(1e-9, t1 - mark_t) / 1e6
    print(f"{rate:.1f} Mbit/s ({total / 1e6:.1f} MB in {t1 - t0:.2f} s)")


def client(a):
    c = socket.create_connection((a.host, a.port), timeout=30)
    buf = b"\0" * (1 << 20)
    total, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        c.sendall(buf)
        total += len(buf)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()
    t = time.perf_counter() - t0
    print(f"client: sent {total / 1e6:.1f} MB in {t:.2f} s ({total * 8 / t / 1e6:.1f} Mbit/s incl. buffers)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client"])
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5201)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    (server if a.mode == "server" else client)(a)


if __name__ == "__main__":
    sys.exit(main())
