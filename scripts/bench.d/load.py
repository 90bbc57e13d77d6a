#!/usr/bin/env python3
"""Load programs for scripts/bench: the byte server and the clients that measure through a path.

    load.py serve --listen HOST:PORT        sink/source server (one header line per connection)
    load.py http --listen HOST:PORT         a Jupyter-like HTTP server: `GET /api` answers
                                            {"version": …} with Content-Length, then closes
    load.py digest N                        sha256 of the first N bytes of the pattern
    load.py bulk ADDR up|down N DIGEST      1 connection, N bytes one way; prints JSON
    load.py latency ADDR COUNT [--http]     COUNT sequential connects, one redis PING each
                                            (--http: one `GET /api`, read by its Content-Length)
    load.py percentiles FILE                p50/p90/p99 of the times `latency --samples` collected
    load.py hold ADDR COUNT --pid L=PID ... --netns NS
                                            COUNT open redis connections, then memory figures
    load.py pipes NS                        how many `podtun agent pipe` processes run in NS
    load.py wan --listen A --to B --rtt-ms N
                                            a TCP relay that delays every byte N/2 ms each
                                            way: a laptop-to-login-host link with a real RTT
    load.py report RESULTS                  the table

Server protocol: the client sends one line, `sink N\\n` or `source N\\n`. For `sink` the server
reads N bytes and answers their sha256 in hex and a newline; for `source` it sends the first N
bytes of the pattern and closes. The pattern has a period of 1 MiB + 7 bytes, which no frame or
buffer size divides, so a dropped, repeated or shifted chunk changes the digest.

Every client has a deadline on every socket operation and exits non-zero with a message on
stderr when a figure cannot be trusted (short transfer, digest mismatch, failed connection).
"""

import argparse
import asyncio
import hashlib
import json
import math
import os
import socket
import socketserver
import sys
import time

PERIOD = (1 << 20) + 7
# Bound on any single socket operation (a stalled path fails instead of hanging).
IO_TIMEOUT = 30.0
RECV_BUF = 1 << 20
# How long `podtun agent pipe` processes get to exit after their connections closed.
PIPES_GONE = 5.0


def pattern():
    blocks = (hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(PERIOD // 32 + 1))
    return b"".join(blocks)[:PERIOD]


def send_pattern(sock, n, pat):
    view = memoryview(pat)
    while n > 0:
        k = min(n, PERIOD)
        sock.sendall(view[:k])
        n -= k


def digest(n, pat):
    h = hashlib.sha256()
    full, rest = divmod(n, PERIOD)
    for _ in range(full):
        h.update(pat)
    h.update(pat[:rest])
    return h.hexdigest()


def read_line(sock, limit=256):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
        if len(data) > limit:
            raise ValueError("header line too long")
    return data.decode().strip()


def recv_digest(sock, n):
    """Reads exactly n bytes from sock; their sha256 in hex (ConnectionError on an early EOF)."""
    h = hashlib.sha256()
    view = memoryview(bytearray(RECV_BUF))
    left = n
    while left > 0:
        got = sock.recv_into(view, min(left, RECV_BUF))
        if not got:
            raise ConnectionError(f"EOF after {n - left} of {n} bytes")
        h.update(view[:got])
        left -= got
    return h.hexdigest()


def parse_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def connect(addr):
    sock = socket.create_connection(parse_addr(addr), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# ---------------------------------------------------------------- server


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            mode, n = read_line(sock).split()
            n = int(n)
            if mode == "sink":
                sock.sendall(recv_digest(sock, n).encode() + b"\n")
            elif mode == "source":
                send_pattern(sock, n, self.server.pattern)
            else:
                raise ValueError(f"unknown mode {mode!r}")
        except (OSError, ValueError) as err:
            print(f"load serve: {self.client_address}: {err}", file=sys.stderr, flush=True)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512


def serve(args):
    server = Server(parse_addr(args.listen), Handler)
    server.pattern = pattern()
    print(f"load serve: listening on {args.listen}", flush=True)
    server.serve_forever()


HTTP_BODY = json.dumps({"version": "2.14.2"}).encode()


class HttpHandler(socketserver.BaseRequestHandler):
    """One request per connection, as a Jupyter server answers a client that sends
    `Connection: close`: the response (headers and body in one write, with Content-Length), then
    the server closes."""

    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IO_TIMEOUT)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError(f"closed before the end of the request (got {head!r})")
                head += chunk
                if len(head) > 16384:
                    raise ValueError("request head too long")
            method, target, version = head.split(b"\r\n", 1)[0].decode().split()
            if method == "GET" and target.split("?")[0] == "/api":
                status, body = "200 OK", HTTP_BODY
            else:
                status, body = "404 Not Found", json.dumps({"message": "Not Found"}).encode()
            sock.sendall(
                f"{version} {status}\r\n"
                "Server: load.py\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n"
                "\r\n".encode()
                + body
            )
        except (OSError, ValueError) as err:
            print(f"load http: {self.client_address}: {err}", file=sys.stderr, flush=True)


def http_serve(args):
    server = Server(parse_addr(args.listen), HttpHandler)
    print(f"load http: listening on {args.listen}", flush=True)
    server.serve_forever()


# ---------------------------------------------------------------- clients


def netns_inodes(patterns):
    """Inodes of the `ip netns` namespaces named in PATTERNS (a trailing `*` is a prefix)."""
    names = os.listdir("/var/run/netns")
    inodes = set()
    for pat in patterns:
        for name in names:
            if name == pat or (pat.endswith("*") and name.startswith(pat[:-1])):
                try:
                    inodes.add(os.stat(f"/var/run/netns/{name}").st_ino)
                except OSError:
                    pass
    return inodes


def cpu_snapshot(ours):
    """Aggregate and per-process CPU ticks, for who-used-the-CPU figures. Processes outside the
    network namespaces in OURS (the benchmark's) count as "others"."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    total, idle = sum(fields[:8]), fields[3] + fields[4]
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        try:
            mine = os.stat(f"/proc/{entry}/ns/net").st_ino in ours
        except OSError:
            mine = False
        procs[entry] = (int(rest[11]) + int(rest[12]), process_label(entry) if mine else "others")
    return total, idle, procs


def process_label(pid):
    argv = [a.decode(errors="replace") for a in cmdline(pid) if a]
    if not argv:
        return "?"
    name = os.path.basename(argv[0])
    if name == "podtun":
        return "podtun agent" if argv[1:2] == ["agent"] else "podtun"
    if name.startswith("python"):
        script = next((a for a in argv[1:] if a.endswith(".py")), "")
        if script.endswith("load.py"):
            return "load.py " + argv[argv.index(script) + 1] if argv.index(script) + 1 < len(argv) else "load.py"
        return os.path.basename(script) or name
    # sshd and redis-server rewrite their argv ("sshd: user@notty", "redis-server 127.0.0.1:6379").
    return name.split()[0].split(":")[0]


def cpu_usage(before, after, secs):
    """Busy share of all CPUs, and the biggest consumers in % of one CPU."""
    (t0, i0, p0), (t1, i1, p1) = before, after
    busy = 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))
    hz = os.sysconf("SC_CLK_TCK")
    by_label = {}
    for pid, (ticks, label) in p1.items():
        used = ticks - p0.get(pid, (0, label))[0]
        if used > 0:
            by_label[label] = by_label.get(label, 0) + used
    top = sorted(by_label.items(), key=lambda kv: -kv[1])[:6]
    return {
        "busy_pct": round(busy),
        "top": [[label, round(100.0 * ticks / hz / secs)] for label, ticks in top],
    }


def bulk(args):
    pat = pattern()
    n = args.bytes
    ours = netns_inodes(args.ours.split(",")) if args.ours else set()
    cpu0 = cpu_snapshot(ours)
    t0 = time.perf_counter()
    sock = connect(args.addr)
    if args.direction == "up":
        sock.sendall(f"sink {n}\n".encode())
        send_pattern(sock, n, pat)
        got = read_line(sock)
        t1 = time.perf_counter()
        where = "the server"
    else:
        sock.sendall(f"source {n}\n".encode())
        try:
            got = recv_digest(sock, n)
        except ConnectionError as err:
            sys.exit(f"bulk down: SHORT TRANSFER: {err}")
        t1 = time.perf_counter()
        where = "the client"
    sock.close()
    if got != args.digest:
        sys.exit(
            f"bulk {args.direction}: SHA256 MISMATCH computed by {where}: "
            f"got {got}, expected {args.digest} ({n} bytes via {args.addr})"
        )
    secs = t1 - t0
    cpu = cpu_usage(cpu0, cpu_snapshot(ours), secs)
    print(json.dumps({"mbps": n / secs / 1e6, "secs": secs, "cpu": cpu}))


def ping(sock):
    sock.sendall(b"PING\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError(f"closed before the PING reply (got {reply!r})")
        reply += chunk
    if reply != b"+PONG\r\n":
        raise ValueError(f"unexpected PING reply {reply!r}")


def http_get(sock):
    """`GET /api` with `Connection: close`; reads the response by its Content-Length, as an HTTP
    client does (not up to the server's close, which a kubelet passes on up to 1 s late)."""
    sock.sendall(b"GET /api HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before the end of the response head (got {data!r})")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode(errors="replace").split("\r\n")
    if not lines[0].startswith("HTTP/1.") or lines[0].split()[1] != "200":
        raise ValueError(f"unexpected status line {lines[0]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("no Content-Length in the response")
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {len(body)} of {length} body bytes")
        body += chunk
    if "version" not in json.loads(body[:length]):
        raise ValueError(f"unexpected body {body!r}")


def percentile(sorted_values, p):
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def latency(args):
    times = []
    for i in range(args.count):
        if i and args.gap:
            time.sleep(args.gap)
        t0 = time.perf_counter()
        try:
            sock = connect(args.addr)
            (http_get if args.http else ping)(sock)
        except (OSError, ValueError) as err:
            sys.exit(f"latency: connection {i + 1} of {args.count} via {args.addr} failed: {err}")
        times.append(time.perf_counter() - t0)
        sock.close()
    if args.samples:
        with open(args.samples, "a") as f:
            f.writelines(f"{t * 1000:.4f}\n" for t in times)
    times.sort()
    ms = lambda v: round(v * 1000, 3)  # noqa: E731
    print(
        json.dumps(
            {
                "p50_ms": ms(percentile(times, 50)),
                "p90_ms": ms(percentile(times, 90)),
                "p99_ms": ms(percentile(times, 99)),
                "max_ms": ms(times[-1]),
                "total_s": round(sum(times), 3),
                "over": sum(1 for t in times if t * 1000 >= args.over) if args.over else None,
            }
        )
    )


def percentiles(args):
    with open(args.samples) as f:
        times = sorted(float(line) for line in f if line.strip())
    if not times:
        sys.exit(f"percentiles: no samples in {args.samples}")
    print(json.dumps({f"p{p}_ms": round(percentile(times, p), 3) for p in (50, 90, 99)} | {"count": len(times)}))


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def pss_kib(pid):
    """Proportional set size: the process's share of the pages it shares with others."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def netns_pids(name):
    """Pids of the processes whose network namespace is `ip netns` namespace NAME."""
    ino = os.stat(f"/var/run/netns/{name}").st_ino
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def hold(args):
    socks = []
    try:
        for i in range(args.count):
            sock = connect(args.addr)
            socks.append(sock)
            ping(sock)
    except (OSError, ValueError) as err:
        sys.exit(f"hold: connection {len(socks)} of {args.count} via {args.addr} failed: {err}")
    # Every connection has answered; ask each once more so all are open end to end at once.
    for sock in socks:
        ping(sock)
    out = {"held": len(socks)}
    for spec in args.pid:
        label, pid = spec.split("=")
        out[label + "_hwm_kib"] = status_kib(pid, "VmHWM")
        out[label + "_rss_kib"] = status_kib(pid, "VmRSS")
    if args.netns:
        pipes = agent_pipes(args.netns)
        out["pipes"] = len(pipes)
        out["pipes_rss_kib"] = sum(status_kib(p, "VmRSS") for p in pipes)
        out["pipes_pss_kib"] = sum(pss_kib(p) for p in pipes)
    for sock in socks:
        sock.close()
    if args.netns and out["pipes"]:
        # Each pipe is one SSH session on the login host: they must end with their connections.
        deadline = time.monotonic() + PIPES_GONE
        while agent_pipes(args.netns) and time.monotonic() < deadline:
            time.sleep(0.1)
        out["pipes_left"] = len(agent_pipes(args.netns))
    print(json.dumps(out))


def agent_pipes(netns):
    """The `podtun agent pipe` processes in `ip netns` namespace NETNS."""
    return [p for p in netns_pids(netns) if cmdline(p)[1:3] == [b"agent", b"pipe"]]


# ---------------------------------------------------------------- a link with a round-trip time


def wan(args):
    """Relays connections from --listen to --to, each chunk delivered rtt/2 after it was read,
    in order, both ways (EOF too). Bandwidth is not shaped: it is for latency figures."""
    delay = args.rtt_ms / 2000

    async def pump(reader, writer):
        queue = asyncio.Queue()

        async def read():
            while True:
                data = await reader.read(1 << 16)
                await queue.put((time.monotonic() + delay, data))
                if not data:
                    return

        async def write():
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(read(), write())
        except OSError:
            writer.close()

    async def handle(reader, writer):
        host, port = parse_addr(args.to)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError as err:
            print(f"load wan: {args.to}: {err}", file=sys.stderr, flush=True)
            writer.close()
            return
        for w in (writer, up_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        writer.close()
        up_writer.close()

    async def main():
        host, port = parse_addr(args.listen)
        server = await asyncio.start_server(handle, host, port)
        print(f"load wan: {args.listen} -> {args.to}, {args.rtt_ms} ms RTT", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------- report

PATHS = [
    ("direct", "direct TCP"),
    ("ssh", "ssh -L"),
    ("manual", "ssh -L + kubectl"),
    ("local", "podtun local"),
    ("via", "podtun --via"),
    ("exec", "--via exec"),
    ("kubectl", "--agent kubectl"),
]
PODTUN = ("local", "via", "exec", "kubectl")
# (key, label, format); ratios are podtun ÷ reference for the rows in RATIO_ROWS.
ROWS = [
    ("up_mbps", "upload MB/s (sha256 ok)", "{:.0f}"),
    ("down_mbps", "download MB/s (sha256 ok)", "{:.0f}"),
    ("lat_p50_ms", "connect+PING p50 ms", "{:.2f}"),
    ("lat_p90_ms", "connect+PING p90 ms", "{:.2f}"),
    ("lat_p99_ms", "connect+PING p99 ms", "{:.2f}"),
    ("http_p50_ms", "connect+GET /api p50 ms", "{:.2f}"),
    ("http_p90_ms", "connect+GET /api p90 ms", "{:.2f}"),
    ("http_p99_ms", "connect+GET /api p99 ms", "{:.2f}"),
    ("wan_p50_ms", "connect+PING p50 ms, WAN", "{:.2f}"),
    ("set_ops", "redis SET ops/s", "{:.0f}"),
    ("get_ops", "redis GET ops/s", "{:.0f}"),
    ("laptop_mib", "peak RSS laptop MiB @100", "{:.1f}"),
    ("agent_mib", "peak RSS login host MiB @100", "{:.1f}"),
    ("upgrades", "upgrades / connection", "{:.2f}"),
    ("api_waits", "connections waiting on API", "{}"),
]
LATENCY_ROWS = {f"{kind}_p{p}_ms" for kind in ("lat", "http") for p in (50, 90, 99)}
RATIO_ROWS = {"up_mbps", "down_mbps", "wan_p50_ms", "set_ops", "get_ops", "laptop_mib"} | LATENCY_ROWS
# The manual chain (ssh -L + kubectl port-forward) is what podtun replaces: every figure it has
# is a reference. The kubectl-mode path is also set against the podtun agent (--via).
REFERENCES = [
    ("direct", "direct", RATIO_ROWS, PODTUN),
    ("ssh", "ssh -L", RATIO_ROWS, PODTUN),
    ("manual", "manual", RATIO_ROWS, PODTUN),
    ("via", "via", RATIO_ROWS, ("kubectl",)),
]


def report(args):
    values, notes, meta = {}, [], {}
    with open(args.results) as f:
        for line in f:
            rec = json.loads(line)
            if "meta" in rec:
                meta[rec["meta"]] = rec["value"]
            elif "note" in rec:
                notes.append(rec["note"])
            else:
                values[(rec["path"], rec["key"])] = rec["value"]
    label_w = max(len(r[1]) for r in ROWS) + 2
    col_w = max(len(p[1]) for p in PATHS) + 2
    lines = ["".ljust(label_w) + "".join(name.rjust(col_w) for _, name in PATHS)]
    for key, label, fmt in ROWS:
        cells = []
        for path, _ in PATHS:
            v = values.get((path, key))
            cells.append(("-" if v is None else v if isinstance(v, str) else fmt.format(v)).rjust(col_w))
        lines.append(label.ljust(label_w) + "".join(cells))
        for ref, ref_name, rows, over in REFERENCES:
            cells = []
            base = values.get((ref, key))
            if key not in rows or not isinstance(base, (int, float)) or not base:
                continue
            for path, _ in PATHS:
                v = values.get((path, key))
                ok = path in over and isinstance(v, (int, float))
                cells.append(("{:.2f}x".format(v / base) if ok else "").rjust(col_w))
            if any(c.strip() for c in cells):
                lines.append(f"  ÷ {ref_name}".ljust(label_w) + "".join(cells))
    print("\n".join(line.rstrip() for line in lines))
    for note in notes:
        print(f"  {note}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", required=True)
    s.set_defaults(fn=serve)
    s = sub.add_parser("http")
    s.add_argument("--listen", required=True)
    s.set_defaults(fn=http_serve)
    s = sub.add_parser("digest")
    s.add_argument("bytes", type=int)
    s.set_defaults(fn=lambda a: print(digest(a.bytes, pattern())))
    s = sub.add_parser("bulk")
    s.add_argument("addr")
    s.add_argument("direction", choices=["up", "down"])
    s.add_argument("bytes", type=int)
    s.add_argument("digest")
    s.add_argument("--ours", help="the benchmark's network namespaces (NAME or PREFIX*, comma-separated)")
    s.set_defaults(fn=bulk)
    s = sub.add_parser("latency")
    s.add_argument("addr")
    s.add_argument("count", type=int)
    s.add_argument("--gap", type=float, default=0, help="seconds to wait between connections")
    s.add_argument("--over", type=float, help="also count the connections that took at least this many ms")
    s.add_argument("--samples", help="append each connection's time (ms, one per line) to this file")
    s.add_argument("--http", action="store_true", help="one `GET /api` per connection instead of a PING")
    s.set_defaults(fn=latency)
    s = sub.add_parser("percentiles")
    s.add_argument("samples", help="a --samples file of `latency`")
    s.set_defaults(fn=percentiles)
    s = sub.add_parser("hold")
    s.add_argument("addr")
    s.add_argument("count", type=int)
    s.add_argument("--pid", action="append", default=[], metavar="LABEL=PID")
    s.add_argument("--netns")
    s.set_defaults(fn=hold)
    s = sub.add_parser("pipes")
    s.add_argument("netns")
    s.set_defaults(fn=lambda a: print(len(agent_pipes(a.netns))))
    s = sub.add_parser("wan")
    s.add_argument("--listen", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--rtt-ms", type=float, required=True)
    s.set_defaults(fn=wan)
    s = sub.add_parser("report")
    s.add_argument("results")
    s.set_defaults(fn=report)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
