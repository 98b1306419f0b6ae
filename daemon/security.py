"""Who may talk to the daemon: ZeroMQ's CURVE, and a ZAP handler that admits one client key.

Each daemon run makes two CURVE key pairs, its own and one for its clients, and writes the public
keys and the client's secret key to the owner-only connection file. The daemon's socket speaks
CURVE only: before any message reaches it, a peer must complete a handshake that needs the
daemon's public key, and the ZAP handler then admits only the client public key of the file.
Every message after that is encrypted and authenticated with keys of that one connection, so a
request captured on the wire cannot be replayed from another socket, and nobody without the file
gets a single message in. Handshake frames are bounded like every other frame (the socket's
ZMQ_MAXMSGSIZE, protocol.MAX_FRAME_BYTES): a peer without the keys can make the daemon hold no
more than that before it is refused.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from glcic.daemon import protocol
from glcic.errors import GlcicError

log = logging.getLogger("glcic.daemon")

#: The ZAP domain of the daemon's socket: the handler answers for it alone.
ZAP_DOMAIN = "glcic"
#: How long a connecting peer has to complete the CURVE handshake, in milliseconds. A local
#: client needs a few; a loaded machine some hundreds.
HANDSHAKE_MS = 5000
#: Refused connections are logged at most this often (a flood must not fill the log).
REFUSAL_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class Keys:
    """The CURVE key pairs of one daemon run, raw 32 bytes each."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def generate(cls) -> Keys:
        check_curve()
        pairs = (*zmq.curve_keypair(), *zmq.curve_keypair())  # (public, secret) twice, z85
        return cls(*(z85.decode(key) for key in pairs))

    def connection_fields(self) -> dict[str, str]:
        """What the connection file carries (hex): the daemon's public key and the client pair.
        The client's secret key is "key", the field protocol-1 clients read (they then refuse the
        file's newer protocol version with a clear message)."""
        return {
            "server_key": self.server_public.hex(),
            "client_key": self.client_public.hex(),
            "key": self.client_secret.hex(),
        }


def check_curve() -> None:
    if not zmq.has("curve"):
        raise GlcicError(
            f"this pyzmq (pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}) has no CURVE "
            "encryption, which the daemon needs to keep other users out: install one that has "
            "it (pip install --upgrade pyzmq: its wheels include it)"
        )


class _OneKey:
    """The ZAP handler's answer: admit the client public key of this run, nobody else."""

    def __init__(self, allowed: bytes) -> None:
        self.allowed = z85.encode(allowed)
        self.refused = 0
        self.logged_at = -REFUSAL_LOG_SECONDS

    def callback(self, domain: str, key: bytes) -> bool:
        if key == self.allowed:
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= REFUSAL_LOG_SECONDS:
            self.logged_at = now
            log.warning("refused connections with an unknown key (%d so far)", self.refused)
        return False


class Gatekeeper:
    """The ZAP handler (a thread of the daemon's ZeroMQ context) and the CURVE server setup."""

    def __init__(self, context: zmq.Context, keys: Keys) -> None:
        self.keys = keys
        self.authenticator = ThreadAuthenticator(context, log=logging.getLogger("glcic.zap"))

    def start(self) -> None:
        """Start answering ZAP requests; before any socket binds, so none is ever unchecked."""
        self.authenticator.start()
        self.authenticator.configure_curve_callback(ZAP_DOMAIN, _OneKey(self.keys.client_public))

    def secure(self, socket: zmq.Socket) -> None:
        """Make `socket` a CURVE server behind this handler, with bounded frames."""
        socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
        # A peer must finish the handshake this fast (libzmq's default is 30 s): each stalled
        # keyless connection may hold up to a frame, so this bounds what many of them hold.
        socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        socket.curve_server = True
        socket.curve_secretkey = self.keys.server_secret
        socket.curve_publickey = self.keys.server_public
        socket.zap_domain = ZAP_DOMAIN.encode()
        # Fail closed should the handler be missing (a draft option some libzmq builds lack;
        # the handler is started before the socket binds in any case).
        with contextlib.suppress(AttributeError, zmq.ZMQError):
            socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def stop(self) -> None:
        self.authenticator.stop()
