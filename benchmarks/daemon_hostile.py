"""The daemon against peers without its keys, and clients of a daemon that died.

Usage: python benchmarks/daemon_hostile.py [--gib 1] [--skip-kill]

Starts a real daemon (CPU, a tiny random-weight model, in a temporary GLCIC_HOME) and prints:

- its peak resident memory (VmHWM, /proc/PID/status) at rest, then after each of two attacks by
  a local peer without the keys, each sending two frames of `--gib` GiB over plain TCP: a
  ZeroMQ peer without encryption (a NULL greeting, then a two-frame message: what protocol 1
  received whole before checking its signature), and a peer that announces CURVE and sends the
  frames as handshake commands (what CURVE alone lets through when frames may be large). The
  frames are streamed from one 1 MiB buffer: the attacker never holds them. Target: at most
  50 MB above rest. A legitimate client pings all along; its slowest answer is printed.
- how long a client waiting on a slow `complete` (request timeout 120 s) takes to report a
  daemon killed with SIGKILL mid-request, and what `status`, `stop` and `start` cost with the
  connection file that kill leaves behind (each a fresh `glcic-daemon` process: Python start-up
  included, and printed alone for comparison).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from glcic import ModelMetadata, new_model, save_model
from glcic.daemon import protocol
from glcic.daemon.protocol import Client, ClientError

CHUNK = bytes(1 << 20)


def _cli(home: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "GLCIC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "glcic.daemon.cli", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    return time.monotonic() - started, result


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _greeting(mechanism: bytes) -> bytes:
    """A ZMTP 3.0 greeting: signature, version, mechanism, as-server flag, filler."""
    return b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + mechanism.ljust(20, b"\0") + bytes(32)


def _frame_header(size: int, flags: int) -> bytes:
    return bytes([flags | 0x02]) + struct.pack(">Q", size)  # 0x02: an 8-byte size follows


def _stream(port: int, prefix: bytes, frames: list[tuple[int, int]]) -> tuple[int, str]:
    """Send `prefix`, then frames of (size, flags) filled with zeros; returns (bytes the kernel
    took, how it ended)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as peer:
        try:
            peer.sendall(prefix)
            for size, flags in frames:
                peer.sendall(_frame_header(size, flags))
                left = size
                while left:
                    n = min(left, len(CHUNK))
                    peer.sendall(CHUNK[:n] if n < len(CHUNK) else CHUNK)
                    left -= n
                    sent += n
        except OSError as error:
            return sent, f"refused ({type(error).__name__})"
        time.sleep(1.0)
        return sent, "all sent, connection still open"


def _null_peer(port: int, size: int) -> tuple[int, str]:
    """An unencrypted ZeroMQ DEALER: NULL greeting, READY, then a two-frame message."""
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    prefix = _greeting(b"NULL") + bytes([0x04, len(ready)]) + ready
    return _stream(port, prefix, [(size, 0x01), (size, 0x00)])  # 0x01: more frames follow


def _curve_peer(port: int, size: int) -> tuple[int, str]:
    """A peer that announces CURVE and sends huge handshake commands instead of a HELLO."""
    return _stream(port, _greeting(b"CURVE"), [(size, 0x04), (size, 0x04)])  # 0x04: command


def _pinger(stop: threading.Event, worst: list[float]) -> None:
    with Client(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            client.ping()
            worst[0] = max(worst[0], time.monotonic() - started)
            time.sleep(0.1)


def memory(home: Path, gib: float) -> None:
    _, started = _cli(home, "start", "--model", "tiny", "--device", "cpu")
    assert started.returncode == 0, started.stderr
    try:
        connection = protocol.read_connection_file()
        with Client(timeout=30) as client:
            rgba = np.full((64, 64, 4), 128, np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            mask[20:40, 20:40] = 255
            client.complete(64, 64, rgba.tobytes(), mask.tobytes())  # everything loaded
        rest = _peak_mb(connection.pid)
        print(f"daemon peak RSS (VmHWM) at rest, after one completion: {rest:.0f} MB")
        size = int(gib * (1 << 30))
        for name, attack in (
            ("unencrypted ZeroMQ peer, 2-frame message", _null_peer),
            ("CURVE greeting, frames as handshake commands", _curve_peer),
        ):
            stop, worst = threading.Event(), [0.0]
            pinger = threading.Thread(target=_pinger, args=(stop, worst))
            pinger.start()
            started = time.monotonic()
            sent, outcome = attack(connection.port, size)
            elapsed = time.monotonic() - started
            time.sleep(0.5)
            stop.set()
            pinger.join()
            peak = _peak_mb(connection.pid)
            print(
                f"{name}, 2 x {gib:g} GiB: {outcome} after {sent / 1e6:.1f} MB accepted by the "
                f"kernel ({elapsed:.2f} s); daemon peak {peak:.0f} MB (+{peak - rest:.0f} MB, "
                f"target <= +50: {'met' if peak - rest <= 50 else 'MISSED'}); slowest ping "
                f"meanwhile {worst[0] * 1000:.0f} ms"
            )
        with Client(timeout=30) as client:
            assert client.ping()["pid"] == connection.pid
    finally:
        _cli(home, "stop")


def killed(home: Path) -> None:
    torch.manual_seed(0)
    save_model(new_model(ModelMetadata(width=0.5)), home / "models" / "slow.safetensors")
    _, started = _cli(home, "start", "--model", "slow", "--device", "cpu")
    assert started.returncode == 0, started.stderr
    pid = protocol.read_connection_file().pid
    size = 3000
    mask = np.zeros((size, size), np.uint8)
    for index in range(36):  # many separate crops: seconds of work
        y, x = 100 + 500 * (index // 6), 100 + 500 * (index % 6)
        mask[y : y + 10 + 3 * index, x : x + 10 + 3 * index] = 255
    pixels = np.full((size, size, 4), 120, np.uint8).tobytes()
    running, outcome = threading.Event(), {}

    def wait() -> None:
        try:
            with Client(timeout=10) as client:
                client.complete(
                    size, size, pixels, mask.tobytes(), timeout=120,
                    progress=lambda stage, _: stage == "network" and running.set(),
                )  # fmt: skip
            outcome["error"] = "none: the request completed before the kill"
        except ClientError as error:
            outcome["error"] = f"{type(error).__name__}: {error}"
        outcome["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    if not running.wait(120):
        raise RuntimeError("the slow request never started")
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    waiter.join()
    print(
        f"client waiting on complete (timeout 120 s), daemon SIGKILLed mid-request: reported in "
        f"{outcome['at'] - killed_at:.2f} s: {outcome['error']}"
    )
    started = time.monotonic()
    try:
        Client(timeout=10).ping()
    except ClientError as error:
        said = f"{type(error).__name__}: {error}"
    print(f"with the stale connection file: Client() in process: "
          f"{(time.monotonic() - started) * 1000:.1f} ms ({said})")  # fmt: skip
    bare, _ = _cli(home, "--help")
    print(f"  (a bare `glcic-daemon --help` takes {bare:.2f} s here)")
    for command in ("status", "stop"):
        seconds, result = _cli(home, command)
        said = (result.stdout + result.stderr).strip().splitlines()[-1]
        print(f"  glcic-daemon {command}: {seconds:.2f} s ({said})")
    seconds, result = _cli(home, "start", "--model", "slow", "--device", "cpu")
    said = result.stdout.strip()
    print(f"  glcic-daemon start: {seconds:.2f} s, loading the model included ({said})")
    started = time.monotonic()
    _cli(home, "stop")
    print(f"  (glcic-daemon stop of that running daemon: {time.monotonic() - started:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of each attack frame")
    parser.add_argument("--skip-kill", action="store_true", help="only the memory figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        os.environ["GLCIC_HOME"] = str(home)
        os.environ.pop("GLCIC_CONNECTION_FILE", None)
        torch.manual_seed(0)
        save_model(new_model(ModelMetadata(width=0.125)), home / "models" / "tiny.safetensors")
        print(f"# daemon against keyless peers and killed daemons, protocol "
              f"{protocol.PROTOCOL_VERSION}, pid {os.getpid()}")  # fmt: skip
        memory(home, args.gib)
        if not args.skip_kill:
            killed(home)


if __name__ == "__main__":
    main()
