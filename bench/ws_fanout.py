"""Socket.IO fan-out: Keel's rooms against a bare Flask-SocketIO app, same gunicorn + gevent setup.

    .venv/bin/python bench/ws_fanout.py [--receivers 200] [--messages 100] [--rounds 3] [--pace 20]

Both apps run under ``deploy/gunicorn.conf.py`` with one gevent worker and the Redis message
queue (a throw-away ``redis-server``), one after the other, ``--rounds`` times alternating:

- ``bare``: Flask-SocketIO alone — ``join_room`` and ``room_message`` handlers that join the
  Socket.IO room and emit to it (no auth, no membership check, no presence, no limit);
- ``keel``: the app itself — token auth at connect (the HTTP guard: bans, revocation, limits),
  rooms and presence in Redis, the sender's membership checked, every event counted against
  ``WS_MESSAGE_RATE`` (set to 1000/second so that the burst is not cut), metrics.

``--receivers`` clients join one room and one more client sends ``--messages`` messages to it:

- **throughput**: the messages sent back to back; deliveries per second = receivers × messages
  / time from the first send to the last delivery (median of ``--bursts``), and the CPU the
  server's worker spent per delivery (``/proc``: less sensitive to a busy machine);
- **paced latency**: the messages sent at ``--pace`` per second, each carrying its send time;
  p50/p99 of send → delivery over every delivery.

The clients are raw Engine.IO v4 over WebSocket on one selector in this process (a threaded
python-socketio client per connection would saturate the 2 cores before the server does).
Goal: Keel ≥ 0.8× the bare deliveries/s, paced p99 ≤ 1.25× the bare one.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import children, free_port, summary
from harness import cpu_seconds as _cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
ROOM = "fanout"


# --- the bare app (gunicorn "bench.ws_fanout:bare_app()") ----------------------------------


def bare_app() -> Any:
    """Flask-SocketIO with the two handlers the benchmark calls, nothing else."""
    from flask import Flask
    from flask_socketio import SocketIO, join_room

    app = Flask("bare")
    sio = SocketIO(
        app,
        async_mode="gevent",
        message_queue=os.environ["REDIS_URL"],
        channel=os.environ["REDIS_KEY_PREFIX"] + "socketio",
        transports=["websocket"],
        logger=False,
        engineio_logger=False,
    )

    @sio.on("join_room")
    def on_join(data: dict[str, Any]) -> dict[str, Any]:
        join_room(data["room"])
        return {"ok": True}

    @sio.on("room_message")
    def on_message(data: dict[str, Any]) -> dict[str, Any]:
        sio.emit("room_message", {"room": data["room"], "message": data["message"]}, to=data["room"])
        return {"ok": True}

    return app


# --- a raw Engine.IO/Socket.IO client on one selector ---------------------------------------


class Conn:
    """One WebSocket carrying Engine.IO v4 / Socket.IO v5 text packets."""

    def __init__(self, port: int, role: str) -> None:
        self.role = role
        self.sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("handshake: connection closed")
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {status[:200]!r}")
        self.buf = bytearray(rest)
        self.sock.setblocking(False)
        self.out = bytearray()
        self.state = "open"  # open -> connecting -> joining -> ready
        self.received = 0
        self.latencies: list[float] = []
        self.acks = 0

    def send_text(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        header = bytearray([0x81])
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += n.to_bytes(2, "big")
        else:
            header.append(0x80 | 127)
            header += n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.out += header + mask + masked
        self.flush()

    def flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:sent]

    def frames(self) -> list[str]:
        """Read what arrived; the complete text messages."""
        try:
            while True:
                chunk = self.sock.recv(262144)
                if not chunk:
                    raise ConnectionError(f"{self.role}: closed by the server")
                self.buf += chunk
                if len(chunk) < 262144:
                    break
        except BlockingIOError:
            pass
        out: list[str] = []
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 2:
            opcode, length, offset = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length, offset = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                length, offset = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if len(buf) - pos < offset + length:
                break
            data = bytes(buf[pos + offset : pos + offset + length])
            pos += offset + length
            if opcode == 0x1:
                out.append(data.decode())
            elif opcode == 0x8:
                raise ConnectionError(f"{self.role}: close frame {data[:2].hex()}")
        del buf[:pos]
        return out


class Fleet:
    """The receivers and the sender, all driven from one selector."""

    def __init__(self, port: int, receivers: int, auth: list[dict[str, str]]) -> None:
        self.sel = selectors.DefaultSelector()
        self.receivers = [Conn(port, "receiver") for _ in range(receivers)]
        self.sender = Conn(port, "sender")
        self.conns = [*self.receivers, self.sender]
        for i, conn in enumerate(self.conns):
            conn.auth = auth[i % len(auth)]  # type: ignore[attr-defined]
            self.sel.register(conn.sock, selectors.EVENT_READ, conn)
        self.until(lambda: all(c.state == "ready" for c in self.conns), 60, "connect and join")

    def handle(self, conn: Conn, text: str) -> None:
        kind = text[:1]
        if kind == "2":  # Engine.IO ping
            conn.send_text("3")
        elif text.startswith("42"):  # an event: room_message (or presence, ignored)
            if text.startswith('42["room_message"'):
                conn.received += 1
                if conn.role == "receiver":
                    sent = json.loads(text[2:])[1]["message"].get("t")
                    if sent is not None:
                        conn.latencies.append(time.perf_counter() - sent)
        elif text.startswith("43"):  # an acknowledgement
            conn.acks += 1
            if conn.state == "joining":
                conn.state = "ready"
        elif kind == "0" and conn.state == "open":  # Engine.IO open: connect the namespace
            conn.state = "connecting"
            conn.send_text("40" + json.dumps(conn.auth))  # type: ignore[attr-defined]
        elif text.startswith("40") and conn.state == "connecting":
            conn.state = "joining"
            conn.send_text('420["join_room",' + json.dumps({"room": ROOM}) + "]")
        elif text.startswith("44"):
            raise ConnectionError(f"connect refused: {text}")

    def pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            conn: Conn = key.data
            for text in conn.frames():
                self.handle(conn, text)
        for conn in self.conns:
            if conn.out:
                conn.flush()

    def until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            self.pump(0.05)

    def send(self, n: int, stamp: bool) -> None:
        message: dict[str, Any] = {"n": n, "text": "fan-out benchmark message"}
        if stamp:
            message["t"] = time.perf_counter()
        self.sender.send_text('42["room_message",' + json.dumps({"room": ROOM, "message": message}) + "]")

    def delivered(self) -> int:
        return sum(c.received for c in self.receivers)

    def reset(self) -> None:
        for conn in self.receivers:
            conn.received, conn.latencies = 0, []

    def close(self) -> None:
        for conn in self.conns:
            self.sel.unregister(conn.sock)
            conn.sock.close()
        self.sel.close()


def cpu_seconds(master: int) -> float:
    """CPU of the gunicorn workers of ``master`` so far."""
    return _cpu_seconds(children(master))


def measure(port: int, master: int, auth: list[dict[str, str]], args: argparse.Namespace) -> dict[str, float]:
    fleet = Fleet(port, args.receivers, auth)
    try:
        n = args.receivers
        for i in range(10):  # warm-up
            fleet.send(i, stamp=False)
        fleet.until(lambda: fleet.delivered() >= 10 * n, 60, "warm-up")
        rates, cpus = [], []
        for _ in range(args.bursts):  # the median of a few bursts: one is well under a second
            fleet.reset()
            cpu = cpu_seconds(master)
            started = time.perf_counter()
            for i in range(args.messages):
                fleet.send(i, stamp=False)
                fleet.pump(0)
            fleet.until(lambda: fleet.delivered() >= args.messages * n, 120, "burst")
            rates.append(args.messages * n / (time.perf_counter() - started))
            cpus.append((cpu_seconds(master) - cpu) / (args.messages * n) * 1e6)
        rate, cpu_us = statistics.median(rates), statistics.median(cpus)
        fleet.reset()
        interval = 1.0 / args.pace
        next_send = time.perf_counter()
        for i in range(args.messages):
            while time.perf_counter() < next_send:
                fleet.pump(max(0.0, min(0.005, next_send - time.perf_counter())))
            fleet.send(i, stamp=True)
            next_send += interval
        fleet.until(lambda: fleet.delivered() >= args.messages * n, 60, "paced")
        lat = sorted(x for c in fleet.receivers for x in c.latencies)
        return {
            "rate": rate,
            "cpu_us": cpu_us,
            "p50": statistics.median(lat) * 1e3,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
        }
    finally:
        fleet.close()


# --- servers ---------------------------------------------------------------------------------


def wait_http(port: int, path: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1):  # loopback only
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def start(target: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [GUNICORN, "-c", "deploy/gunicorn.conf.py", target], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGQUIT: gunicorn's quick shutdown (SIGTERM would wait ``graceful_timeout``, 20 s, for the
    WebSocket connections a gevent worker still counts; the benchmark is over)."""
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def keel_users(port: int, count: int) -> list[dict[str, str]]:
    import requests

    auth = []
    for i in range(count):
        name, password = f"fan{i}_{uuid.uuid4().hex[:6]}", "correct horse battery"
        requests.post(
            f"http://127.0.0.1:{port}/auth/register", json={"username": name, "password": password}, timeout=30
        ).raise_for_status()
        login = requests.post(
            f"http://127.0.0.1:{port}/auth/login", json={"username": name, "password": password}, timeout=30
        )
        login.raise_for_status()
        auth.append({"token": login.json()["access_token"]})
    return auth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=3, help="throughput bursts per round (median)")
    parser.add_argument("--pace", type=float, default=20.0, help="messages per second in the latency phase")
    parser.add_argument("--users", type=int, default=20, help="Keel users the receivers log in as")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is needed")
    tmp = Path(tempfile.mkdtemp(prefix="keel-ws-bench-"))
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "GUNICORN_WORKER_CLASS": "gevent",
            "GUNICORN_WORKERS": "1",
            "GUNICORN_WORKER_CONNECTIONS": "2000",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "LOG_LEVEL": "WARNING",
        }
        ports = {"keel": free_port(), "bare": free_port()}
        (tmp / "secrets").mkdir()
        keel_env = {
            **base,
            "PORT": str(ports["keel"]),
            "REDIS_KEY_PREFIX": "keel:",
            "APP_ENV": "test",
            "DATABASE_URL": f"sqlite:///{tmp / 'keel.db'}",
            "SECRETS_DIR": str(tmp / "secrets"),
            "JWT_SECRET_KEY": "bench-" + "k" * 40,
            "API_KEY_PEPPER": "bench-" + "p" * 20,
            "ACTIONS_RELOAD_INTERVAL": "0",
            "LOG_FORMAT": "text",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "m-keel"),
            "RATE_LIMIT_IP": "1000000/minute",
            "RATE_LIMIT_USER": "1000000/minute",
            "RATE_LIMIT_LOGIN": "1000000/minute",
            "WS_MESSAGE_RATE": "1000/second",
        }
        bare_env = {
            **base,
            "PORT": str(ports["bare"]),
            "REDIS_KEY_PREFIX": "bare:",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "m-bare"),
            "PYTHONPATH": str(ROOT),
        }
        for d in ("m-keel", "m-bare"):
            (tmp / d).mkdir()
        begun = time.monotonic()
        procs.append(start("app:app", keel_env, tmp / "keel.log"))
        procs.append(start("bench.ws_fanout:bare_app()", bare_env, tmp / "bare.log"))
        masters = {"keel": procs[0].pid, "bare": procs[1].pid}
        wait_http(ports["keel"], "/healthz")
        print(f"servers up in {time.monotonic() - begun:.0f} s", flush=True)
        Conn(ports["bare"], "probe").sock.close()  # the bare app answers a WebSocket handshake
        auth = {"keel": keel_users(ports["keel"], args.users), "bare": [{}]}
        print(f"{args.users} Keel users registered and logged in after {time.monotonic() - begun:.0f} s", flush=True)
        print(
            f"{args.receivers} receivers in one room, 1 sender, {args.messages} messages; "
            f"one gevent worker each, Redis message queue; paced at {args.pace:g}/s; {args.rounds} rounds"
        )
        results: dict[str, list[dict[str, float]]] = {"bare": [], "keel": []}
        for r in range(args.rounds):
            for name in ("bare", "keel") if r % 2 == 0 else ("keel", "bare"):
                result = measure(ports[name], masters[name], auth[name], args)
                results[name].append(result)
                print(
                    f"  round {r + 1} {name:<4}  {result['rate']:>9,.0f} deliveries/s  "
                    f"{result['cpu_us']:5.1f} µs CPU/delivery   paced p50 {result['p50']:6.2f} ms  "
                    f"p99 {result['p99']:6.2f} ms",
                    flush=True,
                )
        keys = ("rate", "cpu_us", "p50", "p99")
        med = {n: {k: statistics.median(x[k] for x in rs) for k in keys} for n, rs in results.items()}
        rate_ratio = med["keel"]["rate"] / med["bare"]["rate"]
        p99_ratio = med["keel"]["p99"] / med["bare"]["p99"]
        rates = [x["rate"] / y["rate"] for x, y in zip(results["keel"], results["bare"], strict=True)]
        p99s = [x["p99"] / y["p99"] for x, y in zip(results["keel"], results["bare"], strict=True)]
        print(f"median  bare {med['bare']['rate']:>9,.0f} deliveries/s, p99 {med['bare']['p99']:.2f} ms")
        print(f"median  keel {med['keel']['rate']:>9,.0f} deliveries/s, p99 {med['keel']['p99']:.2f} ms")
        print(f"keel/bare deliveries/s {rate_ratio:.2f} (rounds {min(rates):.2f}-{max(rates):.2f}; goal >= 0.80)")
        print(f"keel/bare paced p99    {p99_ratio:.2f} (rounds {min(p99s):.2f}-{max(p99s):.2f}; goal <= 1.25)")
        cpus = [y["cpu_us"] / x["cpu_us"] for x, y in zip(results["keel"], results["bare"], strict=True)]
        print(
            f"bare/keel server CPU per delivery {med['bare']['cpu_us'] / med['keel']['cpu_us']:.2f} "
            f"(rounds {min(cpus):.2f}-{max(cpus):.2f}; the same ratio measured in CPU, not wall time)"
        )
        summary(
            {
                "measure": "Socket.IO fan-out deliveries/s: Keel / bare Flask-SocketIO",
                "worker": "gevent",
                "redis": "yes",
                "keel": f"{med['keel']['rate']:,.0f}/s",
                "vs_bare": [min(rates), max(rates)],
                "goal": "≥ 0.80",
                "met": "yes" if min(rates) >= 0.8 else "no" if max(rates) < 0.8 else "mixed",
            }
        )
        summary(
            {
                "measure": "Socket.IO fan-out paced p99: Keel / bare Flask-SocketIO",
                "worker": "gevent",
                "redis": "yes",
                "keel": f"{med['keel']['p99']:.1f} ms",
                "vs_bare": [min(p99s), max(p99s)],
                "goal": "≤ 1.25",
                "met": "yes" if max(p99s) <= 1.25 else "no" if min(p99s) > 1.25 else "mixed",
            }
        )
    finally:
        t = time.monotonic()
        for proc in procs:
            stop(proc)
        print(f"servers stopped in {time.monotonic() - t:.0f} s", flush=True)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
